"""The sqlmpc SQL dialect: what is accepted (and how it is represented), what is refused (and how it says so)."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from sqlmpc.errors import SqlSyntaxError, UnsupportedSqlError
from sqlmpc.sql import Describe, Explain, Query, ShowPolicy, ShowTables, parse, parse_query

# ---------------------------------------------------------------- accepted

ACCEPTED = [
    'SELECT region, COUNT(*) FROM hospital.patients GROUP BY region',
    'select region, count(*) from hospital.patients group by region',
    "SELECT a.x AS y, COUNT(*), COUNT(DISTINCT b.pid) c FROM hospital.patients AS a LEFT JOIN insurer.claims b ON a.pid = b.pid WHERE a.age BETWEEN 1 AND 2 AND x NOT IN (1,2) AND z IS NOT NULL AND w LIKE 'a%' GROUP BY a.x HAVING COUNT(*) > 5 ORDER BY 2 DESC NULLS LAST LIMIT 10 OFFSET 3",
    'SELECT SUM(x), AVG(x), MIN(x), MAX(x), COUNT(x) FROM h.t',
    'SELECT regr_slope(y,x), regr_intercept(y,x), regr_r2(y,x) FROM h.t',
    'SELECT corr(x,y), covar_pop(x,y), covar_samp(x,y) FROM h.t',
    'SELECT stddev(x), stddev_samp(x), stddev_pop(x), variance(x), var_samp(x), var_pop(x) FROM h.t',
    'SELECT SUM(x) FILTER (WHERE y > 1) FROM h.t',
    'SELECT COUNT(*) FILTER (WHERE x > 1), COUNT(DISTINCT x) FILTER (WHERE y = 1) FROM h.t',
    "SELECT CASE WHEN x > 1 THEN 'a' WHEN x > 0 THEN 'b' ELSE 'c' END AS band FROM h.t",
    'SELECT CASE x WHEN 1 THEN 2 END FROM h.t',
    'SELECT CAST(x AS DOUBLE), CAST(x AS INTEGER), CAST(x AS varchar), CAST(x AS decimal(10,2)), CAST(x AS DECIMAL), CAST(x AS DECIMAL(10)) FROM h.t',
    'SELECT CAST(x AS BIGINT), CAST(x AS FLOAT), CAST(x AS REAL), CAST(x AS BOOLEAN), CAST(x AS TEXT), CAST(x AS SMALLINT), CAST(x AS INT), CAST(x AS NUMERIC), CAST(x AS DATE) FROM h.t',
    "SELECT COUNT(*) FROM h.t WHERE d >= DATE '2020-01-01'",
    'SELECT COUNT(*) FROM h.t WHERE flag = TRUE OR flag = FALSE OR flag IS NULL',
    "SELECT -x, - -x, -1, 1.5, 1e3, .5, 1.5e+10, 1E-3, 'it''s' FROM h.t",
    "SELECT CASE WHEN x < 5 THEN 'low' ELSE 'high' END AS bin, COUNT(*) FROM h.t GROUP BY 1",
    'SELECT year(d), month(d), extract(year from d), EXTRACT(MONTH FROM d), extract(day from d) FROM h.t',
    "SELECT date_part('year', d), DATE_PART('month', d) FROM h.t",
    'SELECT abs(x), round(x, 2), round(x), coalesce(x, 0), coalesce(x, y, 0), least(x, 1), greatest(x, 1, 2) FROM h.t',
    'SELECT x FROM (SELECT pid, x FROM h1.t UNION ALL SELECT pid, x FROM h2.t WHERE x > 1) AS u',
    'SELECT COUNT(*) FROM (SELECT x FROM a.t UNION ALL SELECT x FROM b.t UNION ALL SELECT x FROM c.t) u',
    'SELECT x % 2, x / 2, x * 2, x + 1, x - 1, 1 + 2 - 3 * 4 / 5 % 6 FROM h.t',
    'SELECT (x + 1) * 2, x + (1 * 2) FROM h.t',
    'SELECT COUNT(*) FROM h.t WHERE x <> 1 AND y != 2 OR NOT (z = 1)',
    'SELECT COUNT(*) FROM h.t WHERE NOT x = 1 AND NOT NOT y < 2',
    'SELECT COUNT(*) FROM h.t WHERE x < 1 OR x <= 2 OR x > 3 OR x >= 4',
    'SELECT "x", "a"."x", "a""b" FROM h.t AS "a"',
    'SELECT COUNT(*) FROM h.t WHERE x = ? AND y BETWEEN ? AND ? AND z IN (?, ?)',
    'SELECT COUNT(*) FROM h.t INNER JOIN h.u ON t.a = u.a JOIN h.v ON u.b = v.b',
    'SELECT COUNT(*) FROM h.t LEFT OUTER JOIN i.u ON t.a = u.a',
    'SELECT COUNT(*) FROM hospital.patients p LEFT JOIN insurer.members m ON p.pid = m.pid LEFT JOIN bureau.people b ON p.pid = b.pid',
    'SELECT x FROM h.t ORDER BY x, y ASC, z DESC, a NULLS FIRST, b DESC NULLS FIRST, c ASC NULLS LAST',
    'SELECT region FROM h.t GROUP BY region ORDER BY COUNT(*) DESC LIMIT 5',
    "SELECT x NOT BETWEEN 1 AND 2, x NOT LIKE 'a%', NOT x IS NULL, x IS NULL FROM h.t",
    "SELECT COUNT(*) FROM h.t WHERE x IN ('a', 'b') AND y NOT IN (-1, 2.5)",
    'SELECT COUNT(*) FROM h.t WHERE a = b < c',
    'SELECT SUM(x) / COUNT(*) AS mean, SUM(x * x) / COUNT(*) - AVG(x) * AVG(x) var FROM h.t',
    'SELECT region, SUM(cost) FILTER (WHERE year(d) = 2020) - SUM(cost) FILTER (WHERE year(d) = 2019) FROM h.t GROUP BY region',
    "SELECT COUNT(*) FROM h.t WHERE x = NULL OR y = 'O''Brien'",
    'SELECT COUNT(*) FROM h.t -- trailing comment',
    'SELECT /* inline */ COUNT(*) FROM h.t;',
    'SELECT COUNT(*) AS n FROM h.t WHERE CASE WHEN x > 1 THEN TRUE ELSE FALSE END',
    'SELECT year, date, month, first, last, analyze, tables FROM h.t',
    'SELECT COUNT(*) FROM h.t HAVING COUNT(*) > 10',
    'SELECT x AS "Weird Name" FROM h.t',
    'SELECT Region, Count(*) FROM Hospital.Patients AS P GROUP BY Region',
    "SELECT COUNT(*) FROM h.t WHERE d BETWEEN DATE '2020-01-01' AND DATE '2020-12-31'",
    'SELECT CAST(SUM(x) AS DOUBLE) / COUNT(*) FROM h.t',
    "SELECT a || b || c, a + b || c FROM h.t GROUP BY p.sex || b.region",
    "SELECT COUNT(*) FROM h.t WHERE x BETWEEN a || b AND c",
    # multi-line, with comments
    "SELECT p.region,\n       COUNT(DISTINCT p.pid) AS people,\n       AVG(c.cost) FILTER (WHERE c.kind = 'er')\n"
    "FROM hospital.patients AS p\n  JOIN insurer.claims AS c ON p.pid = c.pid  -- same person\n"
    "WHERE p.age >= 18 /* adults */\nGROUP BY p.region\nORDER BY people DESC\nLIMIT 20;",
    "SELECT CASE WHEN s.income < 50000 THEN 1 ELSE 2 END AS band,\n"
    "       regr_slope(c.cost, s.income)\n"
    "FROM bureau.survey s\nLEFT JOIN insurer.claims c ON s.pid = c.pid\nGROUP BY 1",
    "SELECT u.region, SUM(u.beds)\nFROM (SELECT region, beds FROM north.wards\n"
    "      UNION ALL\n      SELECT region, beds FROM south.wards WHERE beds > 0) AS u\nGROUP BY u.region",
]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_accepted_query_has_sqlglots_duckdb_shape(sql):
    tree = parse_query(sql)
    assert tree == sqlglot.parse_one(sql, read="duckdb")
    # sqlglot keeps SQL comments on nodes; we drop them (they do not affect ==).
    assert tree.sql("duckdb") == sqlglot.parse_one(sql, read="duckdb").sql("duckdb", comments=False)


def test_at_least_45_accepted_cases():
    assert len(ACCEPTED) >= 45


def test_parse_returns_query_with_text():
    sql = "SELECT COUNT(*) FROM hospital.patients"
    statement = parse(sql)
    assert isinstance(statement, Query) and statement.sql == sql
    assert statement.tree == sqlglot.parse_one(sql, read="duckdb")


@pytest.mark.parametrize("sql, expected", [
    ("SELECT COUNT(*) FROM h.t WHERE d > DATE '2024-02-29'",
     "SELECT COUNT(*) FROM h.t WHERE d > CAST('2024-02-29' AS DATE)"),
    ("SELECT x FROM h.t ORDER BY x DESC NULLS FIRST", "SELECT x FROM h.t ORDER BY x DESC NULLS FIRST"),
    ("select sum(x) filter (where y = ?) from h.t", "SELECT SUM(x) FILTER(WHERE y = ?) FROM h.t"),
    ("SELECT var_samp(x) FROM h.t", "SELECT VARIANCE(x) FROM h.t"),
])
def test_exact_sql_rendering(sql, expected):
    assert parse_query(sql).sql("duckdb") == expected


def test_tree_shapes_later_layers_rely_on():
    tree = parse_query("SELECT regr_r2(y, x) FILTER (WHERE z > 0), COUNT(DISTINCT pid), date_part('year', d) "
                       "FROM h.t LEFT JOIN i.u ON t.pid = u.pid")
    filtered, distinct, part = tree.expressions
    assert isinstance(filtered, exp.Filter) and isinstance(filtered.this, exp.RegrR2)
    assert isinstance(filtered.expression, exp.Where)
    assert isinstance(distinct, exp.Count) and isinstance(distinct.this, exp.Distinct)
    assert isinstance(part, exp.Anonymous) and part.name == "date_part"
    (join,) = tree.args["joins"]
    assert join.side == "LEFT" and join.this.db == "i" and join.this.name == "u"


# ---------------------------------------------------------------- positions


def _text(sql, node):
    return sql[node.meta["start"]:node.meta["end"]]


def test_positions_of_columns_tables_literals_and_placeholders():
    sql = "SELECT p.region,\n  COUNT(*)\nFROM hospital.patients p\nWHERE p.age > ? AND p.sex = 'f'"
    tree = parse_query(sql)
    column = tree.expressions[0]
    assert column.meta == {"line": 1, "col": 8, "start": 7, "end": 15}
    table = tree.find(exp.Table)
    assert (table.meta["line"], table.meta["col"], _text(sql, table)) == (3, 6, "hospital.patients")
    placeholder = tree.find(exp.Placeholder)
    assert (placeholder.meta["line"], placeholder.meta["col"]) == (4, 15)
    literal = tree.find(exp.Literal)
    assert (literal.meta["line"], literal.meta["col"], _text(sql, literal)) == (4, 29, "'f'")
    count = tree.find(exp.Count)
    assert (count.meta["line"], count.meta["col"], _text(sql, count)) == (2, 3, "COUNT(*)")
    assert _text(sql, tree.find(exp.Star)) == "*"


def test_positions_of_operators_and_functions():
    sql = "SELECT SUM(c.cost) FILTER (WHERE c.kind = 'er') / COUNT(*),\n  round(x, 2)\nFROM i.c"
    tree = parse_query(sql)
    division = tree.expressions[0]
    assert isinstance(division, exp.Div) and _text(sql, division) == "SUM(c.cost) FILTER (WHERE c.kind = 'er') / COUNT(*)"
    assert _text(sql, tree.find(exp.Sum)) == "SUM(c.cost)"
    assert _text(sql, tree.find(exp.Filter)) == "SUM(c.cost) FILTER (WHERE c.kind = 'er')"
    assert _text(sql, tree.find(exp.EQ)) == "c.kind = 'er'"
    rounding = tree.find(exp.Round)
    assert (rounding.meta["line"], rounding.meta["col"], _text(sql, rounding)) == (2, 3, "round(x, 2)")


# ---------------------------------------------------------------- other statements


@pytest.mark.parametrize("sql, expected", [
    ("SHOW TABLES", ShowTables()),
    ("show tables;", ShowTables()),
    ("SHOW POLICY", ShowPolicy()),
    ("DESCRIBE hospital.patients", Describe(party="hospital", table="patients")),
    ('describe "hospital"."Patients";', Describe(party="hospital", table="Patients")),
])
def test_other_statements(sql, expected):
    assert parse(sql) == expected


@pytest.mark.parametrize("sql, analyze", [
    ("EXPLAIN SELECT COUNT(*) FROM h.t", False),
    ("explain analyze SELECT COUNT(*) FROM h.t;", True),
])
def test_explain(sql, analyze):
    statement = parse(sql)
    assert isinstance(statement, Explain) and statement.analyze is analyze
    assert statement.query.tree == sqlglot.parse_one("SELECT COUNT(*) FROM h.t", read="duckdb")


def test_parse_query_refuses_other_statements():
    with pytest.raises(SqlSyntaxError, match="expected a SELECT"):
        parse_query("SHOW TABLES")


# ---------------------------------------------------------------- rejected

REJECTED = [
    ('CREATE TABLE h.t (x INT)',
     UnsupportedSqlError, 'CREATE statements are not supported', 1, 1),
    ('DROP TABLE hospital.patients',
     UnsupportedSqlError, 'DROP statements are not supported', 1, 1),
    ('ALTER TABLE h.t ADD x INT',
     UnsupportedSqlError, 'ALTER statements are not supported', 1, 1),
    ('TRUNCATE h.t',
     UnsupportedSqlError, 'TRUNCATE statements are not supported', 1, 1),
    ('INSERT INTO h.t VALUES (1)',
     UnsupportedSqlError, 'INSERT statements are not supported', 1, 1),
    ('UPDATE h.t SET x = 1',
     UnsupportedSqlError, 'UPDATE statements are not supported', 1, 1),
    ('DELETE FROM h.t',
     UnsupportedSqlError, 'DELETE statements are not supported', 1, 1),
    ('MERGE INTO h.t USING h.u ON 1=1',
     UnsupportedSqlError, 'MERGE statements are not supported', 1, 1),
    ("COPY h.t TO 'x.csv'",
     UnsupportedSqlError, 'COPY statements are not supported', 1, 1),
    ('SELECT * FROM hospital.patients',
     UnsupportedSqlError, 'SELECT * is not supported', 1, 8),
    ('SELECT p.* FROM hospital.patients p',
     UnsupportedSqlError, 'SELECT * is not supported', 1, 10),
    ('SELECT region, * FROM h.t',
     UnsupportedSqlError, 'SELECT * is not supported', 1, 16),
    ('SELECT COUNT(*) OVER () FROM h.t',
     UnsupportedSqlError, 'window functions are not supported', 1, 17),
    ('SELECT SUM(x) OVER (PARTITION BY r) FROM h.t',
     UnsupportedSqlError, 'window functions are not supported', 1, 15),
    ('SELECT COUNT(*) FROM h.t WHERE x IN (SELECT x FROM h.u)',
     UnsupportedSqlError, 'subqueries in expressions are not supported', 1, 38),
    ('SELECT COUNT(*) FROM h.t WHERE EXISTS (SELECT 1 FROM h.u)',
     UnsupportedSqlError, 'EXISTS subqueries are not supported', 1, 32),
    ('SELECT (SELECT MAX(x) FROM h.u) FROM h.t',
     UnsupportedSqlError, 'subqueries in expressions are not supported', 1, 9),
    ('WITH a AS (SELECT x FROM h.t) SELECT COUNT(*) FROM a',
     UnsupportedSqlError, 'WITH (common table expressions) is not supported', 1, 1),
    ('SELECT COUNT(*) FROM (SELECT x FROM a.t UNION SELECT x FROM b.t) u',
     UnsupportedSqlError, 'UNION without ALL is not supported', 1, 47),
    ('SELECT COUNT(*) FROM h.t UNION ALL SELECT COUNT(*) FROM i.t',
     UnsupportedSqlError, 'UNION ALL is only allowed inside FROM ( ... ) AS alias', 1, 26),
    ('SELECT COUNT(*) FROM (SELECT x FROM a.t INTERSECT SELECT x FROM b.t) u',
     UnsupportedSqlError, 'INTERSECT is not supported', 1, 41),
    ('SELECT COUNT(*) FROM (SELECT x FROM a.t EXCEPT SELECT x FROM b.t) u',
     UnsupportedSqlError, 'EXCEPT is not supported', 1, 41),
    ('SELECT COUNT(*) FROM h.t CROSS JOIN i.u',
     UnsupportedSqlError, 'CROSS JOIN is not supported', 1, 26),
    ('SELECT COUNT(*) FROM h.t, i.u',
     UnsupportedSqlError, 'comma joins are not supported', 1, 25),
    ('SELECT COUNT(*) FROM h.t RIGHT JOIN i.u ON t.a = u.a',
     UnsupportedSqlError, 'RIGHT JOIN is not supported', 1, 26),
    ('SELECT COUNT(*) FROM h.t FULL OUTER JOIN i.u ON t.a = u.a',
     UnsupportedSqlError, 'FULL JOIN is not supported', 1, 26),
    ('SELECT COUNT(*) FROM h.t NATURAL JOIN i.u',
     UnsupportedSqlError, 'NATURAL JOIN is not supported', 1, 26),
    ('SELECT COUNT(*) FROM h.t JOIN i.u USING (a)',
     UnsupportedSqlError, 'JOIN ... USING is not supported', 1, 35),
    ('SELECT COUNT(*) FROM h.t JOIN i.u',
     SqlSyntaxError, 'unexpected end of input; expected ON', 1, 34),
    ('SELECT COUNT(*) FROM patients',
     UnsupportedSqlError, "table 'patients' must be qualified by its party", 1, 22),
    ('SELECT COUNT(*) FROM h.t JOIN claims ON t.a = claims.a',
     UnsupportedSqlError, "table 'claims' must be qualified by its party", 1, 31),
    ('SELECT DISTINCT region FROM h.t',
     UnsupportedSqlError, 'SELECT DISTINCT is not supported', 1, 8),
    ('SELECT median(x) FROM h.t',
     UnsupportedSqlError, 'unknown function median', 1, 8),
    ("SELECT string_agg(x, ',') FROM h.t",
     UnsupportedSqlError, 'unknown function string_agg', 1, 8),
    ('SELECT COUNT(*) FROM h.t; SELECT 1 FROM h.t',
     SqlSyntaxError, 'only one statement at a time', 1, 27),
    ("SELECT COUNT(*) FROM h.t WHERE x = 'abc",
     SqlSyntaxError, 'unterminated string literal', 1, 36),
    ('SELECT COUNT(*) FROM h.t /* open',
     SqlSyntaxError, 'unterminated /* comment', 1, 26),
    ('SELECT "abc FROM h.t',
     SqlSyntaxError, 'unterminated quoted name', 1, 8),
    ('',
     SqlSyntaxError, 'empty query', 1, 1),
    ('   -- only a comment',
     SqlSyntaxError, 'empty query', 1, 1),
    ('SELECT COUNT(*) FROM h.t WHERE',
     SqlSyntaxError, 'unexpected end of input; expected an expression', 1, 31),
    ('SELECT FROM h.t',
     SqlSyntaxError, "unexpected 'FROM'; expected an expression", 1, 8),
    ('SELECT COUNT(*) h.t',
     SqlSyntaxError, "unexpected '.'; expected FROM or ','", 1, 18),
    ('SELECT SUM(DISTINCT x) FROM h.t',
     UnsupportedSqlError, 'SUM(DISTINCT ...) is not supported', 1, 8),
    ('SELECT SUM(*) FROM h.t',
     SqlSyntaxError, 'SUM(*) is not allowed; only COUNT(*) takes *', 1, 12),
    ('SELECT SUM(x, y) FROM h.t',
     SqlSyntaxError, 'SUM takes 1 argument, got 2', 1, 8),
    ('SELECT abs(x) FILTER (WHERE x > 1) FROM h.t',
     SqlSyntaxError, 'FILTER applies only to aggregates, not to ABS', 1, 8),
    ('SELECT CAST(x AS JSON) FROM h.t',
     UnsupportedSqlError, 'type JSON is not supported in CAST', 1, 18),
    ("SELECT COUNT(*) FROM h.t WHERE d > TIMESTAMP '2020-01-01 00:00'",
     UnsupportedSqlError, "typed literal TIMESTAMP '...' is not supported", 1, 36),
    ("SELECT COUNT(*) FROM h.t WHERE d > DATE '2020-13-01'",
     SqlSyntaxError, "invalid date '2020-13-01'", 1, 36),
    ('SELECT EXTRACT(HOUR FROM d) FROM h.t',
     UnsupportedSqlError, 'EXTRACT(HOUR ...) is not supported', 1, 16),
    ('SELECT COUNT(*) FROM (SELECT x FROM a.t) u',
     UnsupportedSqlError, 'a subquery in FROM must be a UNION ALL of SELECTs', 1, 40),
    ('SELECT COUNT(*) FROM h.t WHERE x IN (y, z)',
     SqlSyntaxError, "unexpected 'y'; IN takes a list of literals", 1, 38),
    ('SELECT COUNT(*) FROM h.t ORDER BY x NULLS MIDDLE',
     SqlSyntaxError, "unexpected 'MIDDLE' after NULLS", 1, 43),
    ('SHOW COLUMNS',
     UnsupportedSqlError, 'SHOW COLUMNS is not supported', 1, 6),
    ('EXPLAIN VERBOSE SELECT COUNT(*) FROM h.t',
     SqlSyntaxError, "unexpected 'VERBOSE' after EXPLAIN", 1, 9),
    ('DESCRIBE patients',
     UnsupportedSqlError, "table 'patients' must be qualified by its party", 1, 10),
    ('SELECT COUNT(*) FROM h.t WHERE x = 1 # 2',
     SqlSyntaxError, "unexpected character '#'", 1, 38),
    ('SELECT COUNT(*) FROM h.t LIMIT ALL',
     SqlSyntaxError, "unexpected 'ALL'; expected a whole number", 1, 32),
    ('PRAGMA version',
     SqlSyntaxError, "unexpected 'PRAGMA'; expected SELECT, EXPLAIN, SHOW or DESCRIBE", 1, 1),
    ('EXPLAIN DELETE FROM h.t',
     UnsupportedSqlError, 'DELETE statements are not supported', 1, 9),
    ('SELECT COUNT(*) FROM h.t GROUP x',
     SqlSyntaxError, "unexpected 'x'; expected BY", 1, 32),
    ('SELECT COUNT(*) FROM h.t QUALIFY x > 1',
     UnsupportedSqlError, 'window functions are not supported', 1, 26),
    ('SELECT COUNT(*) FROM db.h.t',
     SqlSyntaxError, 'too many dots: names are party.table or alias.column', 1, 26),
    ('SELECT COUNT(*) FROM h.t WHERE x = 1)',
     SqlSyntaxError, "unexpected ')'; expected GROUP BY, HAVING, ORDER BY, LIMIT or end of input", 1, 37),
    ('SELECT COUNT(*) FROM h.t WHERE (x = 1',
     SqlSyntaxError, "unexpected end of input; expected ')'", 1, 38),
    ('SELECT region,\n       COUNT(*)\nFROM hospital.patients\nWHERE age > 40\nGROUP BY region\nHAVING COUNT(*) OVER () > 1',
     UnsupportedSqlError, 'window functions are not supported', 6, 17),
    ('SELECT region\nFROM hospital.patients p\nRIGHT JOIN insurer.members m ON p.pid = m.pid',
     UnsupportedSqlError, 'RIGHT JOIN is not supported', 3, 1),
    ('SELECT COUNT(*)\nFROM hospital.patients\nWHERE pid IN (\n  SELECT pid FROM insurer.claims)',
     UnsupportedSqlError, 'subqueries in expressions are not supported', 4, 3),
    ('SELECT region, COUNT(*)\nFROM patients\nGROUP BY region',
     UnsupportedSqlError, "table 'patients' must be qualified by its party", 2, 6),
    ('SELECT region,\n  median(age)\nFROM hospital.patients GROUP BY region',
     UnsupportedSqlError, 'unknown function median', 2, 3),
    ('-- my query\nSELECT *\nFROM hospital.patients',
     UnsupportedSqlError, 'SELECT * is not supported', 2, 8),
    ("SELECT COUNT(*)\nFROM hospital.patients\nWHERE name = 'O''Brien\n  AND age > 3",
     SqlSyntaxError, 'unterminated string literal', 3, 14),
    ('SELECT COUNT(*)\nFROM hospital.patients\nWHERE',
     SqlSyntaxError, 'unexpected end of input; expected an expression', 3, 6),
    ('SELECT COUNT(*) FROM h.t\n;\nDROP TABLE h.t',
     SqlSyntaxError, 'only one statement at a time', 3, 1),
    ('SELECT COUNT(*)\n  FROM h.t /* note\n  unfinished',
     SqlSyntaxError, 'unterminated /* comment', 2, 12),
    ('SELECT COUNT(*) FROM h.t WHERE x LIKE y',
     SqlSyntaxError, "unexpected 'y'; LIKE takes a string pattern", 1, 39),
    ('SELECT x y z FROM h.t',
     SqlSyntaxError, "unexpected 'z'; expected FROM or ','", 1, 12),
]


@pytest.mark.parametrize("sql, error, message, line, column", REJECTED)
def test_rejected(sql, error, message, line, column):
    with pytest.raises(SqlSyntaxError) as caught:
        parse(sql)
    err = caught.value
    assert type(err) is error
    assert message in str(err)
    assert (err.line, err.column) == (line, column)
    assert err.hint
    assert "lark" not in str(err).lower() and "Unexpected" not in str(err)


def test_at_least_45_rejected_cases():
    assert len(REJECTED) >= 45


@pytest.mark.parametrize("sql, hint", [
    ("CREATE TABLE h.t (x INT)", "sqlmpc is read-only: only SELECT, EXPLAIN, SHOW TABLES, SHOW POLICY, DESCRIBE"),
    ("INSERT INTO h.t VALUES (1)", "sqlmpc is read-only"),
    ("SELECT * FROM hospital.patients", "person-level rows are never released"),
    ("SELECT COUNT(*) OVER () FROM h.t", "use GROUP BY"),
    ("SELECT COUNT(*) FROM h.t WHERE x IN (SELECT x FROM h.u)", "join on the key instead"),
    ("SELECT COUNT(*) FROM h.t WHERE EXISTS (SELECT 1 FROM h.u)", "join on the key instead"),
    ("SELECT COUNT(*) FROM h.t CROSS JOIN i.u", "join with [LEFT] JOIN ... ON a.key = b.key"),
    ("SELECT COUNT(*) FROM h.t, i.u", "join with [LEFT] JOIN ... ON a.key = b.key"),
    ("SELECT COUNT(*) FROM patients", "tables are named party.table, e.g. hospital.patients"),
    ("SELECT median(x) FROM h.t", "REGR_SLOPE"),
    ("SELECT DISTINCT region FROM h.t", "GROUP BY"),
    ("WITH a AS (SELECT 1) SELECT 1 FROM a", "without WITH"),
    ("SELECT COUNT(*) FROM (SELECT x FROM a.t UNION SELECT x FROM b.t) u", "UNION ALL"),
])
def test_rejection_hints(sql, hint):
    with pytest.raises(SqlSyntaxError) as caught:
        parse(sql)
    assert hint in caught.value.hint


def test_caret_is_under_the_offending_token():
    sql = "SELECT region,\n       COUNT(*) OVER ()\nFROM hospital.patients"
    with pytest.raises(UnsupportedSqlError) as caught:
        parse(sql)
    lines = str(caught.value).splitlines()
    source = next(i for i, text in enumerate(lines) if text.startswith("LINE 2: "))
    caret_line = lines[source + 1]
    caret_at = caret_line.index("^")
    assert lines[source][caret_at:caret_at + 4] == "OVER"
    assert caret_line.strip() == "^^^^"


def test_caret_for_unexpected_end_of_input_is_after_the_text():
    with pytest.raises(SqlSyntaxError) as caught:
        parse("SELECT COUNT(*) FROM h.t WHERE x =")
    lines = str(caught.value).splitlines()
    assert lines[1] == "LINE 1: SELECT COUNT(*) FROM h.t WHERE x ="
    assert lines[2].index("^") == len(lines[1])
