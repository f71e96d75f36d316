"""Splitting scripts into statements: ';' inside strings, quoted names and comments does not split."""

from sqlmpc.sql.script import split_script, statements


def test_semicolons_in_strings_names_and_comments_do_not_split():
    done, rest = split_script("SELECT 'a;b' FROM x; -- c;d\nSELECT 2; /* ; */ SELECT \"x;y\"")
    assert done == ["SELECT 'a;b' FROM x", "-- c;d\nSELECT 2"]
    assert rest == ' /* ; */ SELECT "x;y"'


def test_doubled_quotes_and_trailing_statement():
    assert statements("SELECT 'it''s; fine'; SELECT 3") == ["SELECT 'it''s; fine'", "SELECT 3"]
    assert statements("-- only a comment;\n") == []
    assert statements("SELECT 1;\n-- trailing comment") == ["SELECT 1"]
