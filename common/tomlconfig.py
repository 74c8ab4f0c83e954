"""Strict reading of TOML configuration: unknown keys are errors, and every error names the
file, the section, the key, the value and the rule broken (Blocky's strict unmarshal)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from common.errors import ConfigError, HedgerowError

Check = Callable[[str], str | None]  # returns the rule a value breaks, or None


class _Missing:
    """The default of a required key (None is a real default for optional getters)."""

    def __repr__(self) -> str:
        return "required"


REQUIRED = _Missing()


class FieldError(ConfigError):
    """A ConfigError about one key of one table read through a Section: `table` is that table
    (None when what was read is not a table) and `key` the key ("" for the table itself). A
    checker that wants every problem drops the key and reads again (hedgerow-hub check)."""

    def __init__(self, message: str, table: dict[str, object] | None, key: str) -> None:
        super().__init__(message)
        self.table = table
        self.key = key


def load_toml(path: Path) -> dict[str, object]:
    """Parse a TOML file, turning I/O and syntax errors into ConfigError. A UTF-8 byte-order
    mark (Windows Notepad writes one) is accepted."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return tomllib.loads(data.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def toml_value(value: object) -> str:
    """A value as TOML would write it (messages show what the user wrote, not Python's repr)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "(missing)"
    return str(value)


class Section:
    """One TOML table being read, with one typed getter per kind of value. Call done() at the
    end to reject unknown keys."""

    def __init__(self, name: str, table: object, source: str = "") -> None:
        self.name = name
        self.source = source
        if not isinstance(table, dict):
            self.fail("", table, "must be a table")
        self._table: dict[str, object] = table
        self._seen: set[str] = set()

    def fail(self, key: str, value: object, rule: str) -> NoReturn:
        """Raise a ConfigError (a FieldError) naming where, what and why."""
        where = f"[{self.name}]" + (f" {key}" if key else "")
        prefix = f"{self.source}: " if self.source else ""
        table = getattr(self, "_table", None)  # unset while __init__ refuses a non-table
        raise FieldError(f"{prefix}{where} = {toml_value(value)}: {rule}", table, key)

    def has(self, key: str) -> bool:
        """True if the key is present."""
        return key in self._table

    def _value(self, key: str, required: bool) -> object:
        """The raw value, None if absent and optional; marks the key as read."""
        self._seen.add(key)
        if key not in self._table:
            if required:
                self.fail(key, None, "is required")
            return None
        return self._table[key]

    def _text(self, key: str, required: bool, check: Check | None) -> str | None:
        value = self._value(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(key, value, "must be a string")
        if check is not None:
            problem = check(value)
            if problem:
                self.fail(key, value, problem)
        return value

    def text(self, key: str, default: str | _Missing = REQUIRED, check: Check | None = None) -> str:
        """A string (required unless a default is given); `check` returns a rule or None."""
        value = self._text(key, isinstance(default, _Missing), check)
        if value is None:
            assert isinstance(default, str)
            return default
        return value

    def optional_text(self, key: str, check: Check | None = None) -> str | None:
        """A string, or None when the key is absent."""
        return self._text(key, False, check)

    def _integer(self, key: str, required: bool, lo: int | None, hi: int | None) -> int | None:
        value = self._value(key, required)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, value, "must be an integer")
        if lo is not None and value < lo:
            self.fail(key, value, f"must be at least {lo}")
        if hi is not None and value > hi:
            self.fail(key, value, f"must be at most {hi}")
        return value

    def integer(
        self,
        key: str,
        default: int | _Missing = REQUIRED,
        lo: int | None = None,
        hi: int | None = None,
    ) -> int:
        """An integer within [lo, hi] (required unless a default is given)."""
        value = self._integer(key, isinstance(default, _Missing), lo, hi)
        if value is None:
            assert isinstance(default, int)
            return default
        return value

    def optional_integer(self, key: str, lo: int | None = None, hi: int | None = None) -> int | None:
        """An integer within [lo, hi], or None when the key is absent."""
        return self._integer(key, False, lo, hi)

    def flag(self, key: str, default: bool | _Missing = REQUIRED) -> bool:
        """true or false (required unless a default is given)."""
        value = self._value(key, isinstance(default, _Missing))
        if value is None:
            assert isinstance(default, bool)
            return default
        if not isinstance(value, bool):
            self.fail(key, value, "must be true or false")
        return value

    def text_list(
        self,
        key: str,
        default: list[str] | _Missing = REQUIRED,
        rule: str = "must be a list of strings",
    ) -> list[str]:
        """A list of strings (`rule` is the message when it is not one)."""
        value = self._value(key, isinstance(default, _Missing))
        if value is None:
            assert isinstance(default, list)
            return list(default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(key, value, rule)
        return [str(v) for v in value]

    def optional_text_list(
        self, key: str, rule: str = "must be a list of strings"
    ) -> list[str] | None:
        """A list of strings, or None when the key is absent."""
        if not self.has(key):
            self._seen.add(key)
            return None
        return self.text_list(key, rule=rule)

    def table(self, key: str, default: dict[str, object] | _Missing = REQUIRED) -> dict[str, object]:
        """A sub-table, raw (wrap it in a Section to read it); required unless a default is given."""
        if not isinstance(default, _Missing) and not self.has(key):
            self._seen.add(key)
            return dict(default)
        value = self._value(key, True)
        if not isinstance(value, dict):
            self.fail(key, value, "must be a table")
        return value

    def optional_table(self, key: str) -> dict[str, object] | None:
        """A sub-table, or None when the key is absent."""
        value = self._value(key, False)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(key, value, "must be a table")
        return value

    def section(self, key: str) -> Section:
        """A sub-table as a Section of its own (an absent one reads as empty)."""
        return Section(f"{self.name}.{key}", self.table(key, {}), self.source)

    def tables(self, key: str) -> list[dict[str, object]]:
        """An array of tables ([[key]]); empty if absent."""
        value = self._value(key, False)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(key, value, "must be an array of tables ([[...]])")
        return list(value)

    def keys(self) -> list[str]:
        """The keys present in this table, in file order."""
        return list(self._table)

    def done(self) -> None:
        """Reject keys nobody asked for: a typo must not silently fall back to a default."""
        unknown = sorted(set(self._table) - self._seen)
        if unknown:
            self.fail(unknown[0], self._table[unknown[0]], "is not a known key")


T = TypeVar("T")
Tree = dict[str, object] | list[object]


def every_problem(load: Callable[[], T], tree: object, problems: list[str]) -> T | None:
    """Run `load`, which reads from the parsed TOML `tree` (or tables inside it), until it
    succeeds: at each problem, add its message to `problems`, drop the key it names from the
    tree (the whole table when the key is absent, as a required one is) and read again. So one
    call finds every problem it can, several within one section included. A problem that only
    follows from a dropped key (a required key cut for its bad value) is not reported, the first
    message said it: its whole table is cut instead. Stops, returning None, at a problem it
    cannot step past. Returns what `load` returned at last."""
    dropped: set[tuple[int, str]] = set()
    said: set[str] = set()  # a message twice: the cut did not reach what `load` reads
    while True:
        try:
            return load()
        except FieldError as exc:
            follows = exc.table is not None and (id(exc.table), exc.key) in dropped
            if str(exc) in said:
                return None
            said.add(str(exc))
            if follows:  # not reported (the first message said it): cut the whole table
                spot = _holder(tree, exc.table)
            else:
                if str(exc) not in problems:
                    problems.append(str(exc))
                spot = _spot(exc, tree)
            if spot is None:
                return None
            holder, key = spot
            if isinstance(holder, dict):
                dropped.add((id(holder), str(key)))
                del holder[str(key)]
            else:
                del holder[int(key)]
        except HedgerowError as exc:
            if str(exc) not in problems:
                problems.append(str(exc))
            return None


def _spot(exc: FieldError, tree: object) -> tuple[Tree, str | int] | None:
    """Where in the tree to cut so that the problem goes: its key, else its table."""
    table = exc.table
    if table is None:
        return None
    if exc.key and exc.key in table:
        return table, exc.key
    return _holder(tree, table)


def _holder(tree: object, wanted: object) -> tuple[Tree, str | int] | None:
    """The table or array that holds `wanted` (by identity), and its key or index there."""
    items: list[tuple[str | int, object]]
    if isinstance(tree, dict):
        items = list(tree.items())
    elif isinstance(tree, list):
        items = list(enumerate(tree))
    else:
        return None
    for key, value in items:
        if value is wanted:
            return tree, key
    for _, value in items:
        found = _holder(value, wanted)
        if found is not None:
            return found
    return None
