"""The documented limits of a statement, and text that cannot be a statement at all.

Every limit is checked while parsing, before anything is bound or planned and
long before any party works, and each is refused with a
:class:`~sqlmpc.errors.LimitExceededError` that points at the first place
beyond it.  The numbers are chosen (and measured, see docs/dialect.md) so that
everything within them parses, binds and plans in about a second or less without
deep recursion: the binder, the planner and sqlglot's SQL generator recurse over
expressions, and at the nesting limit at least 630 of Python's 1,000 frames stay
unused (tests/test_limits.py plans every nesting shape from 300 frames deep).
"""

from __future__ import annotations

import re

from lark import Tree

from sqlmpc.errors import InvalidTextError, LimitExceededError
from sqlmpc.sql.positions import error_at

MAX_STATEMENT_CHARS = 100_000   # characters of one statement (with its parameters bound)
MAX_TOKENS = 10_000             # words, numbers, strings, operators of one statement (parsing is ~50 µs each)
MAX_DEPTH = 100                 # nesting levels of one expression
MAX_IN_ITEMS = 1_000            # values in one IN (...) list
MAX_SELECT_ITEMS = 100          # items in one select list
MAX_AGGREGATES = 20             # aggregate calls in one statement (planning grows with their square)

# What the lexer will see as one token (comments are skipped); an unterminated quote ends the text.
TOKENS = re.compile(r"--[^\n]*|/\*.*?(?:\*/|$)|'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|\w+|\S", re.S)

# Rules that structure a statement; every other rule is part of an expression and
# adds one level of nesting (parentheses, operators, NOT, CASE/WHEN, function calls).
STATEMENT_RULES = frozenset({
    "start", "explain", "show", "describe", "select", "select_items", "select_item", "federated",
    "union_all", "simple_select", "table_ref", "table_name", "join", "join_kind", "where", "group_by",
    "having", "order_by", "ordered", "limit", "alias",
})
# Rules that chain terms (a AND b AND c ...): each term adds a level too.
CHAIN_RULES = frozenset({"and_", "or_", "add", "sub", "mul", "div", "mod", "dpipe"})


def check_text(sql: str) -> None:
    """Refuse text that is too long or is not valid Unicode (a lone surrogate cannot be sent anywhere)."""
    if not isinstance(sql, str):
        raise InvalidTextError(f"a statement is text (str), not {type(sql).__name__}",
                               hint="decode bytes first, e.g. sql.decode('utf-8')")
    try:
        sql.encode("utf-8")
    except UnicodeEncodeError as err:
        raise error_at(InvalidTextError, f"invalid character U+{ord(sql[err.start]):04X} (a lone surrogate, "
                       "not a Unicode character)", sql, err.start,
                       hint="remove it; text in a statement must be valid Unicode (UTF-8)") from None
    if len(sql) > MAX_STATEMENT_CHARS:
        raise error_at(LimitExceededError, f"the statement has {len(sql):,} characters, more than "
                       f"{MAX_STATEMENT_CHARS:,}", sql, MAX_STATEMENT_CHARS,
                       hint="shorten it: long IN lists and repeated expressions are the usual cause")
    tokens = (t for t in TOKENS.finditer(sql) if not t.group().startswith(("--", "/*")))
    for count, token in enumerate(tokens, 1):
        if count > MAX_TOKENS:
            raise error_at(LimitExceededError, f"the statement has more than {MAX_TOKENS:,} tokens (words, numbers, "
                           "strings, operators)", sql, token.start(),
                           hint="shorten it: long IN lists and repeated expressions are the usual cause")


def check_tree(sql: str, tree: Tree) -> None:
    """Refuse a parse tree that nests too deeply (walked without recursion)."""
    stack = [(tree, 0, None)]
    while stack:
        node, depth, chain = stack.pop()       # chain: the nearest enclosing AND/OR/operator rule
        if node.data not in STATEMENT_RULES:
            depth += 1
            if depth > MAX_DEPTH:
                start = node.meta.start_pos if not node.meta.empty else 0
                raise error_at(LimitExceededError, f"the expression nests more than {MAX_DEPTH} levels deep",
                               sql, start, hint=_depth_hint(chain))
        if node.data in CHAIN_RULES:
            chain = node.data
        stack.extend((child, depth, chain) for child in node.children if isinstance(child, Tree))


def _depth_hint(rule: str | None) -> str:
    if rule in ("and_", "or_"):
        return ("each AND / OR adds a level: write alternatives of one column as col IN (...), "
                f"or split the condition (at most {MAX_DEPTH} terms)")
    if rule in ("add", "sub", "mul", "div", "mod", "dpipe"):
        return f"each operator adds a level: at most {MAX_DEPTH} terms in a chain of + - * / ||"
    return (f"each parenthesis, operator, NOT, CASE, WHEN and function call adds a level; "
            f"at most {MAX_DEPTH} are allowed")


def check_in_list(sql: str, items: list, meta) -> None:
    _check_count(sql, items, meta, MAX_IN_ITEMS, "the IN list has {:,} values",
                 "group the values into a dimension of the catalog, or split the query")


def check_select_items(sql: str, items: list, meta) -> None:
    _check_count(sql, items, meta, MAX_SELECT_ITEMS, "the select list has {:,} items",
                 "split the query into several with fewer outputs each")


def _check_count(sql: str, items: list, meta, limit: int, what: str, hint: str) -> None:
    """Refuse more than ``limit`` items, pointing at the first one too many (sqlglot nodes carry their start)."""
    if len(items) > limit:
        pos = items[limit].meta.get("start")
        raise error_at(LimitExceededError, f"{what.format(len(items))}, more than {limit:,}", sql,
                       pos if pos is not None else meta.start_pos, hint=hint)


def check_aggregate_count(sql: str, count: int, start: int) -> None:
    """Called for each aggregate as it is built: refuse the first one beyond the limit."""
    if count > MAX_AGGREGATES:
        raise error_at(LimitExceededError, f"the statement has more than {MAX_AGGREGATES} aggregates", sql, start,
                       hint="split the query into several with fewer aggregates each")
