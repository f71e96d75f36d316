"""The dialect's one grammar (grammar/sqlmpc.lark) as a lark parser."""

from __future__ import annotations

import importlib.resources
from functools import lru_cache
from pathlib import Path

from lark import Lark


def _grammar_text() -> str:
    packaged = importlib.resources.files("sqlmpc.sql") / "sqlmpc.lark"
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammar" / "sqlmpc.lark").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def lark_parser() -> Lark:
    # The basic (not contextual) lexer makes every keyword reserved everywhere,
    # so "SELECT from h.t" fails at FROM instead of reading a column "from".
    return Lark(_grammar_text(), parser="lalr", lexer="basic", propagate_positions=True,
                maybe_placeholders=True)


def keywords() -> list[str]:
    """The grammar's literal terminals: keywords, operators and punctuation, as written in it."""
    return [t.pattern.value for t in lark_parser().terminals if t.pattern.type == "str"]
