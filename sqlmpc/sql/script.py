"""Splitting a script into statements at ';' — but not at a ';' inside a string, name or comment."""

from __future__ import annotations


def split_script(text: str) -> tuple[list[str], str]:
    """The complete statements (each ended by ';') and the unfinished rest of ``text``."""
    statements, start, i, n = [], 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"":                                  # a string or quoted name; '' / "" escape
            j = i + 1
            while j < n and not (text[j] == c and text[j + 1:j + 2] != c):
                j += 2 if text[j] == c else 1
            i = j + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == ";":
            statements.append(text[start:i])
            start = i = i + 1
        else:
            i += 1
    return [s.strip() for s in statements if _has_sql(s)], text[start:]


def statements(text: str) -> list[str]:
    """Every statement of a script; a last one without ';' counts too."""
    done, rest = split_script(text)
    return done + ([rest.strip()] if _has_sql(rest) else [])


def _has_sql(chunk: str) -> bool:
    """More than whitespace and comments."""
    rest = chunk.lstrip()
    while rest.startswith(("--", "/*")):
        end = "\n" if rest.startswith("--") else "*/"
        rest = rest.split(end, 1)[1].lstrip() if end in rest else ""
    return bool(rest)
