"""Splitting a script into statements at ';' — but not at a ';' inside a string, name or comment.

sqlglot's tokenizer does the lexing, set up as the grammar (grammar/sqlmpc.lark) reads SQL: '...'
strings and "..." names with a doubled quote as the escape, -- and /* */ comments.  Statements are
slices of the script's own text, so the parser's positions (line, column, caret) stay those of the
statement as written.
"""

from __future__ import annotations

from sqlglot.errors import TokenError
from sqlglot.tokens import Token, Tokenizer, TokenType


class _ScriptTokenizer(Tokenizer):
    NESTED_COMMENTS = False         # as the grammar's BLOCK_COMMENT: the first */ ends a comment


def split_script(text: str) -> tuple[list[str], str]:
    """The complete statements (each ended by ';') and the unfinished rest of ``text``."""
    if ";" not in text:         # the shell calls this per line with the growing statement: skip the tokenizer
        return [], text
    done, rest, _ = _split(text)
    return done, rest


def statements(text: str) -> list[str]:
    """Every statement of a script; a last one without ';' counts too.

    A rest that does not tokenize (an unterminated string, name or comment) is passed on as a
    statement, so the parser reports it with its position and a hint.
    """
    done, rest, rest_has_sql = _split(text)
    return done + ([rest.strip()] if rest_has_sql else [])


def _split(text: str) -> tuple[list[str], str, bool]:
    """The complete statements, the rest after the last ';', and whether that rest holds more than comments."""
    tokens, complete = _tokens(text)
    done, start, has_sql = [], 0, False
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            if has_sql:                             # a stretch of only comments or nothing is no statement
                done.append(text[start:token.start].strip())
            start, has_sql = token.end + 1, False
        else:
            has_sql = True
    return done, text[start:], has_sql or not complete


def _tokens(text: str) -> tuple[list[Token], bool]:
    """The tokens of ``text`` and whether it tokenized to the end; when it did not (a string, name or
    comment still open), the tokens before the failure."""
    tokenizer = _ScriptTokenizer()                  # one per call: the pg front end splits on many threads
    try:
        return tokenizer.tokenize(text), True
    except TokenError:
        return tokenizer.tokens, False
