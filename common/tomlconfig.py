"""Strict reading of TOML configuration: unknown keys are errors, and every error names the
file, the section, the key, the value and the rule broken (Blocky's strict unmarshal)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from common.errors import ConfigError

T = TypeVar("T")
_MISSING: Any = object()


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning I/O and syntax errors into ConfigError."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


class Section:
    """One TOML table being read. Call done() at the end to reject unknown keys."""

    def __init__(self, name: str, table: Any, source: str = "") -> None:
        self.name = name
        self.source = source
        if not isinstance(table, dict):
            self.fail("", table, "must be a table")
        self._table: dict[str, Any] = table
        self._seen: set[str] = set()

    def fail(self, key: str, value: Any, rule: str) -> NoReturn:
        """Raise a ConfigError naming where, what and why."""
        where = f"[{self.name}]" + (f" {key}" if key else "")
        prefix = f"{self.source}: " if self.source else ""
        raise ConfigError(f"{prefix}{where} = {value!r}: {rule}")

    def has(self, key: str) -> bool:
        """True if the key is present."""
        return key in self._table

    def _get(self, key: str, default: Any, kind: type | tuple[type, ...], rule: str) -> Any:
        self._seen.add(key)
        if key not in self._table:
            if default is _MISSING:
                self.fail(key, None, "is required")
            return default
        value = self._table[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            self.fail(key, value, rule)
        return value

    def text(
        self, key: str, default: Any = _MISSING, check: Callable[[str], str | None] | None = None
    ) -> Any:
        """A string; `check` returns an error rule or None."""
        value = self._get(key, default, str, "must be a string")
        if check is not None and isinstance(value, str):
            problem = check(value)
            if problem:
                self.fail(key, value, problem)
        return value

    def integer(
        self, key: str, default: Any = _MISSING, lo: int | None = None, hi: int | None = None
    ) -> Any:
        """An integer within [lo, hi]."""
        value = self._get(key, default, int, "must be an integer")
        if isinstance(value, int) and not isinstance(value, bool):
            if lo is not None and value < lo:
                self.fail(key, value, f"must be at least {lo}")
            if hi is not None and value > hi:
                self.fail(key, value, f"must be at most {hi}")
        return value

    def flag(self, key: str, default: Any = _MISSING) -> Any:
        """true or false."""
        return self._get(key, default, bool, "must be true or false")

    def text_list(
        self, key: str, default: Any = _MISSING, rule: str = "must be a list of strings"
    ) -> Any:
        """A list of strings (`rule` is the message when it is not one)."""
        value = self._get(key, default, list, rule)
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            self.fail(key, value, rule)
        return value

    def table(self, key: str, default: Any = _MISSING) -> Any:
        """A sub-table (returned raw; wrap it in a Section to read it)."""
        return self._get(key, default, dict, "must be a table")

    def tables(self, key: str) -> list[Any]:
        """An array of tables ([[key]]); empty if absent."""
        value = self._get(key, [], list, "must be an array of tables ([[...]])")
        if not all(isinstance(v, dict) for v in value):
            self.fail(key, value, "must be an array of tables ([[...]])")
        return list(value)

    def done(self) -> None:
        """Reject keys nobody asked for: a typo must not silently fall back to a default."""
        unknown = sorted(set(self._table) - self._seen)
        if unknown:
            self.fail(unknown[0], self._table[unknown[0]], "is not a known key")
