"""Syntax errors a person can act on: lark's parse errors become SqlSyntaxError (and kin)
with the position, what was expected in words, and a hint for the usual mistakes."""

from __future__ import annotations

import re

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from sqlmpc.errors import SqlSyntaxError, UnsupportedSqlError
from sqlmpc.sql.grammar import lark_parser
from sqlmpc.sql.positions import error_at

# ---------------------------------------------------------------- hints

READ_ONLY = "sqlmpc is read-only: only SELECT, EXPLAIN, SHOW TABLES, SHOW POLICY, DESCRIBE"
DERIVED_HINT = ("a subquery in FROM only stacks one table held by several parties "
                "(FROM (SELECT ... FROM h1.t UNION ALL SELECT ... FROM h2.t) AS u); otherwise write one "
                "SELECT over the tables themselves: the inner joins and WHERE with the outer GROUP BY and aggregates")
JOIN_HINT = "join with [LEFT] JOIN ... ON a.key = b.key"
SUBQUERY_HINT = "subqueries in expressions are not supported; join on the key instead"
WINDOW_HINT = "window functions are not supported; use GROUP BY"
QUALIFIED_HINT = "tables are named party.table, e.g. hospital.patients"
UNION_HINT = ("UNION ALL is only allowed in FROM, to stack one table held by several parties: "
              "FROM (SELECT ... FROM h1.t UNION ALL SELECT ... FROM h2.t) AS u")
DIALECT_HINT = ("the dialect is SELECT ... FROM party.table [[LEFT] JOIN party.table ON ...] "
                "[WHERE ...] [GROUP BY ...] [HAVING ...] [ORDER BY ...] [LIMIT n]")


def no_rows_hint(sql: str) -> str:
    """What to write instead of SELECT * (a BI tool's preview), naming the query's table when it has one."""
    if re.search(r"\bFROM\s*\(", sql, re.I):
        return ("person-level rows are never released: run the query inside the parentheses by itself "
                "(it must GROUP BY and aggregate); " + DERIVED_HINT)
    table = re.search(r'\bFROM\s+([\w"]+\s*\.\s*[\w"]+)', sql, re.I)
    name = re.sub(r"\s", "", table.group(1)) if table else "party.table"
    return (f"person-level rows are never released, not even a preview with LIMIT: DESCRIBE {name} lists its "
            f"dimensions; count per dimension instead, e.g. SELECT t.dim, COUNT(*) FROM {name} t GROUP BY t.dim")


# Words kept out of NAME by the grammar: what to say when one appears.
RESERVED_WORDS = {
    **{w: ("{} JOIN is not supported", JOIN_HINT) for w in ("RIGHT", "FULL", "CROSS", "NATURAL")},
    "USING": ("JOIN ... USING is not supported", JOIN_HINT),
    **{w: ("window functions are not supported", WINDOW_HINT) for w in ("OVER", "WINDOW", "QUALIFY")},
    **{w: ("WITH (common table expressions) is not supported",
           "write the query without WITH; name tables directly as party.table")
       for w in ("WITH", "RECURSIVE")},
    **{w: ("{} is not supported", UNION_HINT) for w in ("INTERSECT", "EXCEPT")},
    "EXISTS": ("EXISTS subqueries are not supported", SUBQUERY_HINT),
    **{w: ("{} is not supported", DIALECT_HINT) for w in ("LATERAL", "PIVOT", "UNPIVOT", "SAMPLE", "TABLESAMPLE")},
}
DDL_WORDS = {"CREATE", "DROP", "ALTER", "TRUNCATE", "RENAME", "GRANT", "REVOKE"}
DML_WORDS = {"INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "UPSERT", "REPLACE"}


# ---------------------------------------------------------------- lark errors -> our errors

EXPRESSION_STARTS = {"INT", "DECIMAL", "STRING", "LPAR", "MINUS", "CASE", "CAST", "EXTRACT", "QMARK",
                     "TRUE", "FALSE", "NULL", "NAME", "QUOTED_NAME", "NOT"}
OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "PERCENT", "EQUAL", "LESSTHAN", "MORETHAN", "AND", "OR",
             "NOT", "BETWEEN", "IN", "LIKE", "IS"}
LITERAL_STARTS = {"INT", "DECIMAL", "STRING", "TRUE", "FALSE", "NULL", "MINUS", "QMARK"}
TWO_WORDS = {"GROUP": "GROUP BY", "ORDER": "ORDER BY"}


def _unterminated(sql: str) -> SqlSyntaxError | None:
    """An unterminated string, quoted name or comment (lark only sees a stray character)."""
    i = 0
    while i < len(sql):
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end < 0:
                return error_at(SqlSyntaxError, "unterminated /* comment", sql, i, i + 2, "close the comment with */")
            i = end + 2
        elif sql[i] in "'\"":
            quote, j = sql[i], i + 1
            while True:
                j = sql.find(quote, j)
                if j < 0:
                    what = "string literal" if quote == "'" else "quoted name"
                    return error_at(SqlSyntaxError, f"unterminated {what}", sql, i, i + 1,
                                  f"close it with {quote}; write {quote * 2} for a {quote} inside it")
                if sql.startswith(quote * 2, j):
                    j += 2
                    continue
                break
            i = j + 1
        else:
            i += 1
    return None


def _display(name: str) -> str:
    if name == "$END":
        return "end of input"
    if name in TWO_WORDS:
        return TWO_WORDS[name]
    if name in ("NAME", "QUOTED_NAME"):
        return "a name"
    if name == "INT":
        return "a whole number"
    if name == "DECIMAL":
        return "a number"
    if name == "STRING":
        return "a string"
    try:
        value = lark_parser().get_terminal(name).pattern.value
    except KeyError:
        return name
    return value.upper() if value.isalpha() else f"'{value}'"


def _describe_expected(expected: set[str]) -> str:
    names = set(expected) - {"SEMICOLON"}  # a trailing ';' is never what the user is missing
    parts = []
    if {"STRING", "LPAR", "NAME"} <= names:
        parts.append("an expression")
        names -= EXPRESSION_STARTS
    elif {"STRING", "INT"} <= names:
        parts.append("a literal")
        names -= LITERAL_STARTS
    operators = names & (OPERATORS | {n for n in names if n.startswith("__ANON")})
    names -= operators
    order = {t.name: i for i, t in enumerate(lark_parser().terminals)}
    for name in sorted(names, key=lambda n: (n == "$END", order.get(n, 0))):
        if _display(name) not in parts:
            parts.append(_display(name))
    if operators:
        parts.append("an operator")
    if len(parts) > 8:
        return ", ".join(parts[:7]) + ", ..."
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def _acceptable(err: UnexpectedInput) -> set[str]:
    """The terminals that could really come next.

    LALR merges states, so ``err.expected`` may list tokens that cannot follow
    here; the interactive parser tries each one for real.
    """
    parser = getattr(err, "interactive_parser", None)
    if parser is not None:
        return set(parser.accepts())
    return set(getattr(err, "expected", ()) or ())


def explain_parse_error(sql: str, err: UnexpectedInput) -> SqlSyntaxError:
    """Turn a lark failure into an error that a person can act on."""
    found = _unterminated(sql)
    if found is not None:
        return found

    if isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream
        word = re.match(r"[A-Za-z_]\w*", sql[pos:])
        if word and word.group().upper() in RESERVED_WORDS:
            message, hint = RESERVED_WORDS[word.group().upper()]
            return error_at(UnsupportedSqlError, message.format(word.group().upper()), sql, pos, word.end() + pos, hint)
        return error_at(SqlSyntaxError, f"unexpected character '{sql[pos]}'", sql, pos, pos + 1, DIALECT_HINT)

    token = getattr(err, "token", None)
    if isinstance(err, UnexpectedEOF) or token is None or token.type == "$END":
        if not re.sub(r"--[^\n]*|/\*.*?\*/|[\s;]", "", sql, flags=re.S):
            return error_at(SqlSyntaxError, "empty query", sql, 0, 1,
                          "write a query, e.g. SELECT region, COUNT(*) FROM hospital.patients GROUP BY region")
        end = getattr(token, "end_pos", None) or len(sql.rstrip())
        expected = _acceptable(err)
        return error_at(SqlSyntaxError, f"unexpected end of input; expected {_describe_expected(expected)}",
                      sql, end, end + 1, DIALECT_HINT)

    assert isinstance(err, UnexpectedToken)
    expected = _acceptable(err)
    start, end = token.start_pos, token.end_pos
    word = token.value.upper()

    def unsupported(message, hint):
        return error_at(UnsupportedSqlError, message, sql, start, end, hint)

    if expected <= {"$END", "SEMICOLON"}:
        return error_at(SqlSyntaxError, "only one statement at a time", sql, start, end,
                      "remove everything after the first ';'")
    if "SELECT" in expected and "INT" not in expected:  # where a statement starts
        # EXPLAIN DELETE ...: the parser took DELETE for ANALYZE and fails one word later.
        explained = re.match(r"\s*explain\s+(\w+)", sql, re.I)
        if explained and explained.group(1).upper() in DDL_WORDS | DML_WORDS:
            word = explained.group(1).upper()
            start, end = explained.span(1)
        if word in DDL_WORDS | DML_WORDS:
            return unsupported(f"{word} statements are not supported", READ_ONLY)
        return error_at(SqlSyntaxError, f"unexpected '{token.value}'; expected SELECT, EXPLAIN, SHOW or DESCRIBE",
                      sql, start, end, READ_ONLY)
    if expected == {"ALL"}:
        return unsupported("UNION without ALL is not supported", UNION_HINT)
    if token.type == "UNION":
        return unsupported("UNION ALL is only allowed inside FROM ( ... ) AS alias", UNION_HINT)
    if token.type == "STAR" and "NAME" in expected:
        return unsupported("SELECT * is not supported", no_rows_hint(sql))
    if token.type == "DISTINCT":
        return unsupported("SELECT DISTINCT is not supported", "use GROUP BY on the columns to get distinct groups")
    if token.type == "SELECT" and "INT" in expected:
        return unsupported("subqueries in expressions are not supported", SUBQUERY_HINT)
    if token.type == "RPAR" and "UNION" in expected:
        return unsupported("a subquery in FROM must be a UNION ALL of SELECTs", DERIVED_HINT)
    if token.type == "COMMA" and "JOIN" in expected:
        return unsupported("comma joins are not supported", JOIN_HINT)
    if token.type == "DOT" and re.search(r'[\w"]\s*\.\s*[\w"]+\s*$', sql[:start]):
        return error_at(SqlSyntaxError, "too many dots: names are party.table or alias.column", sql, start, end,
                      QUALIFIED_HINT)
    if expected == {"STRING"}:
        return error_at(SqlSyntaxError, f"unexpected '{token.value}'; LIKE takes a string pattern", sql, start, end,
                      "write e.g. name LIKE 'A%'")
    if {"STRING", "INT"} <= expected and "NAME" not in expected:
        return error_at(SqlSyntaxError, f"unexpected '{token.value}'; IN takes a list of literals", sql, start, end,
                      "write x IN (1, 2, 3); to compare with another table, join on the key instead")
    if expected == {"ON"}:
        return error_at(SqlSyntaxError, f"unexpected '{token.value}'; a JOIN needs ON", sql, start, end, JOIN_HINT)
    hint = "every SELECT reads FROM party.table, e.g. FROM hospital.patients" if "FROM" in expected else DIALECT_HINT
    return error_at(SqlSyntaxError, f"unexpected '{token.value}'; expected {_describe_expected(expected)}",
                  sql, start, end, hint)
