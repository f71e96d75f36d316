"""A TOML file read so that every mistake can name its file, its line and its key path."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path

from sqlmpc.errors import ConfigError

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


class TomlText:
    """The text of one TOML file: turns a key path into an error with a line number."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.text = text

    def line_of(self, keypath: tuple[str, ...]) -> int | None:
        """The line of the deepest component of ``keypath`` found in order in the text.

        A scan, not a parser: each key is searched after the previous one, which
        finds ``[a.b]`` headers, dotted keys and inline tables alike.
        """
        pos, line = 0, None
        for key in keypath:
            pattern = rf'(?<![\w-])(?:"{re.escape(key)}"|\'{re.escape(key)}\'|{re.escape(key)})(?=\s*[=.\]])'
            match = re.compile(pattern, re.MULTILINE).search(self.text, pos)
            if match is None:
                break
            pos = match.end()
            line = self.text.count("\n", 0, match.start()) + 1
        return line

    def error(self, message: str, keypath: tuple[str, ...], *, missing: bool = False) -> ConfigError:
        """``missing``: the last key is absent, so point at the line of the table that should hold it."""
        return ConfigError(message, path=str(self.path), location=".".join(keypath) or None,
                           line=self.line_of(keypath[:-1] if missing else keypath))


def read_toml(path: Path) -> tuple[dict, TomlText]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the federation file: {exc.strerror or exc}", path=str(path)) from None
    try:
        return tomllib.loads(text), TomlText(path, text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_POSITION.search(message)
        line = int(found.group(1)) if found else None
        raise ConfigError(f"TOML syntax error: {message}", path=str(path), line=line) from None


class Node:
    """One TOML table being read, with its key path, so every mistake points at its place."""

    def __init__(self, source: TomlText, value: object, keypath: tuple[str, ...]):
        self.source = source
        self.keypath = keypath
        if not isinstance(value, dict):
            raise self.error(f"expected a table, found {describe(value)}")
        self.value: dict = value

    def error(self, message: str, key: str | None = None, *, missing: bool = False) -> ConfigError:
        return self.source.error(message, self.keypath + ((key,) if key is not None else ()), missing=missing)

    def allow(self, keys: Iterable[str]) -> None:
        keys = tuple(keys)
        for key in self.value:
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f" (allowed: {', '.join(keys)})"
                raise self.error(f"unknown key '{key}'{hint}", key)

    def has(self, key: str) -> bool:
        return key in self.value

    def require(self, key: str, kind: type | tuple[type, ...], what: str) -> object:
        if key not in self.value:
            raise self.error(f"missing required key '{key}' ({what})", key, missing=True)
        return self.get(key, kind, what)

    def get(self, key: str, kind: type | tuple[type, ...], what: str, default: object = None) -> object:
        if key not in self.value:
            return default
        value = self.value[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a TOML `true` must not pass for a number.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.error(f"'{key}' must be {what}, found {describe(value)}", key)
        return value

    def child(self, key: str) -> Node:
        return Node(self.source, self.value[key], self.keypath + (key,))

    def children(self) -> Iterable[tuple[str, Node]]:
        for key in self.value:
            yield key, self.child(key)


def describe(value: object) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)
    return f"{kind} ({value!r})" if not isinstance(value, (dict, list)) else kind


def check_name(node: Node, name: str, what: str) -> None:
    if not _IDENTIFIER.match(name):
        raise node.error(f"{what} name '{name}' must be a plain SQL identifier (letters, digits, _)")


def find_duplicate(names: Iterable[str]) -> str | None:
    """SQL names are case-insensitive: 'pid' and 'PID' would be the same column."""
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            return name
        seen.add(name.lower())
    return None
