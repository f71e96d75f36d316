"""Splitting scripts into statements: ';' inside strings, quoted names and comments does not split."""

import pytest

from sqlmpc.errors import SqlSyntaxError
from sqlmpc.sql.parser import parse
from sqlmpc.sql.script import split_script, statements


def test_semicolons_in_strings_names_and_comments_do_not_split():
    done, rest = split_script("SELECT 'a;b' FROM x; -- c;d\nSELECT 2; /* ; */ SELECT \"x;y\"")
    assert done == ["SELECT 'a;b' FROM x", "-- c;d\nSELECT 2"]
    assert rest == ' /* ; */ SELECT "x;y"'


def test_doubled_quotes_and_trailing_statement():
    assert statements("SELECT 'it''s; fine'; SELECT 3") == ["SELECT 'it''s; fine'", "SELECT 3"]
    assert statements("-- only a comment;\n") == []
    assert statements("SELECT 1;\n-- trailing comment") == ["SELECT 1"]


def test_semicolon_inside_a_string():
    assert statements("SELECT h.a FROM h.t WHERE h.b = 'x;y';SELECT 2") == [
        "SELECT h.a FROM h.t WHERE h.b = 'x;y'", "SELECT 2"]


def test_semicolon_inside_a_quoted_name():
    assert statements('SELECT h."odd;name" AS "a;""b" FROM h.t; SELECT 2;') == [
        'SELECT h."odd;name" AS "a;""b" FROM h.t', "SELECT 2"]


def test_semicolon_inside_a_dash_comment():
    assert statements("SELECT 1 -- not; the end\n, 2;\nSELECT 3;") == ["SELECT 1 -- not; the end\n, 2", "SELECT 3"]


def test_semicolon_inside_a_block_comment_which_does_not_nest():
    assert statements("SELECT /* a;\n b; */ 1; SELECT 2") == ["SELECT /* a;\n b; */ 1", "SELECT 2"]
    # As in the grammar, the first */ closes the comment: the second /* is inside it.
    assert statements("/* a /* b */ SELECT 1; SELECT 2") == ["/* a /* b */ SELECT 1", "SELECT 2"]
    assert statements("; ;\n/* ; */ ;") == []                  # nothing but comments between the ';'


def test_explain_and_show_statements_split_like_the_others():
    assert statements("EXPLAIN SELECT 'a;b' FROM h.t; SHOW TABLES ;SHOW POLICY") == [
        "EXPLAIN SELECT 'a;b' FROM h.t", "SHOW TABLES", "SHOW POLICY"]


def test_statements_are_the_script_text_so_positions_hold():
    script = "SELECT 1;\n\n  SELECT x\n  FROM h.nothing y ;\r\nSELECT 'é'"
    done = statements(script)
    assert done == ["SELECT 1", "SELECT x\n  FROM h.nothing y", "SELECT 'é'"]
    assert all(sql in script for sql in done)


def test_unterminated_string_is_unfinished_then_reported_by_the_parser():
    done, rest = split_script("SELECT 1; SELECT 'a;b\n")
    assert done == ["SELECT 1"] and rest == " SELECT 'a;b\n"       # the shell waits for the rest
    done, rest = split_script("SELECT 1; SELECT 'a;b\nc';")
    assert done == ["SELECT 1", "SELECT 'a;b\nc'"] and rest == ""
    *_, last = statements("SELECT 1;\nSELECT h.a FROM h.t WHERE h.b = 'open; SELECT 2;")
    assert last == "SELECT h.a FROM h.t WHERE h.b = 'open; SELECT 2;"
    with pytest.raises(SqlSyntaxError, match=r"unterminated string literal \(line 1, column 33\)"):
        parse(last)


def test_unterminated_quoted_name_and_comment_are_reported_by_the_parser():
    assert split_script('SELECT "a;b') == ([], 'SELECT "a;b')
    with pytest.raises(SqlSyntaxError, match="unterminated quoted name"):
        parse(statements('SELECT 1; SELECT "a;b')[-1])
    assert statements("SELECT 1; /* open; SELECT 2;") == ["SELECT 1", "/* open; SELECT 2;"]
    with pytest.raises(SqlSyntaxError, match=r"unterminated /\* comment"):
        parse("/* open; SELECT 2;")
