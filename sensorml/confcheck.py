"""Small helpers for checking TOML tables into frozen dataclasses.

Every error names the key path and the bad value, e.g.
``decision.k: 7 is larger than decision.n (5)``.

>>> t = Table({"k": 3, "name": "x"}, "decision")
>>> t.int("k", 1, lo=1)
3
>>> t.str("name")
'x'
>>> t.done()
>>> Table({"kk": 1}, "decision").done()
Traceback (most recent call last):
...
sensorml.errors.ConfigError: decision.kk: unknown key
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Any

from sensorml.errors import ConfigError

_MISSING = object()


class Table:
    """A view of one TOML table that remembers which keys were read."""

    def __init__(self, data: Any, path: str, base_dir: Path | None = None) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path or 'config'}: expected a table, got {type(data).__name__}")
        self.data = data
        self.path = path
        self.base_dir = base_dir
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self.seen.add(name)
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            raise ConfigError(f"{self.key(name)}: required key is missing")
        return default

    def str(self, name: str, default: Any = _MISSING, choices: tuple[str, ...] = ()) -> Any:
        v = self.raw(name, default)
        if v is None or (v is default and default is not _MISSING):
            return v
        if not isinstance(v, str):
            raise ConfigError(f"{self.key(name)}: {v!r} is not a string")
        if choices and v not in choices:
            raise ConfigError(f"{self.key(name)}: {v!r} is not one of {', '.join(choices)}")
        return v

    def bool(self, name: str, default: Any = _MISSING) -> Any:
        v = self.raw(name, default)
        if v is not default and not isinstance(v, bool):
            raise ConfigError(f"{self.key(name)}: {v!r} is not true or false")
        return v

    def int(self, name: str, default: Any = _MISSING, lo: int | None = None,
            hi: int | None = None) -> Any:
        v = self.raw(name, default)
        if v is None or (v is default and default is not _MISSING):
            return v
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{self.key(name)}: {v!r} is not an integer")
        _range(self.key(name), v, lo, hi)
        return v

    def float(self, name: str, default: Any = _MISSING, lo: float | None = None,
              hi: float | None = None) -> Any:
        v = self.raw(name, default)
        if v is None or (v is default and default is not _MISSING):
            return v
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{self.key(name)}: {v!r} is not a finite number")
        _range(self.key(name), v, lo, hi)
        return float(v)

    def duration(self, name: str, default: Any = _MISSING, lo: float = 0.0) -> Any:
        from firmware_bridge.parsing import parse_duration

        v = self.raw(name, default)
        if v is None or (v is default and default is not _MISSING and not isinstance(v, str)):
            return v
        try:
            s = parse_duration(v, self.key(name))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        _range(self.key(name), s, lo, None)
        return s

    def path_(self, name: str, default: Any = _MISSING) -> Any:
        v = self.str(name, default)
        if v is None:
            return v
        p = Path(v).expanduser()
        if not p.is_absolute() and self.base_dir is not None:
            p = self.base_dir / p
        return Path(os.path.normpath(p))  # not resolve(): a `current` symlink stays a link

    def str_list(self, name: str, default: Any = _MISSING) -> Any:
        v = self.raw(name, default)
        if v is default:
            return v
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{self.key(name)}: {v!r} is not a list of strings")
        return tuple(v)

    def table(self, name: str, required: bool = False) -> Table:
        v = self.raw(name, _MISSING if required else {})
        return Table(v, self.key(name), self.base_dir)

    def tables(self, name: str) -> list[Table]:
        v = self.raw(name, [])
        if isinstance(v, dict):
            v = [v]
        if not isinstance(v, list):
            raise ConfigError(f"{self.key(name)}: expected an array of tables ([[{name}]])")
        return [Table(x, f"{self.key(name)}[{i}]", self.base_dir) for i, x in enumerate(v)]

    def done(self) -> None:
        """Raise on the first key that was never read (a typo, most likely)."""
        for k in self.data:
            if k not in self.seen:
                hint = difflib.get_close_matches(k, list(self.seen), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"{self.key(k)}: unknown key{extra}")


def _range(key: str, v: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and v < lo:
        raise ConfigError(f"{key}: {v!r} is less than {lo}")
    if hi is not None and v > hi:
        raise ConfigError(f"{key}: {v!r} is greater than {hi}")
