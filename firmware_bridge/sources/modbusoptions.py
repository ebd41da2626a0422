"""What a Modbus source is asked to do, checked before anything connects (config →
**check** → plan → gather): the URL (its transport part is :mod:`firmware_bridge.modbus.client`'s),
the register map and the points chosen as channels, the poll rate, the request timeout
and retries, the backoff. Each mistake is one :class:`ConfigError` naming the URL and the key.

>>> o = ModbusOptions.check("modbus-tcp://127.0.0.1:5020?rate=5&timeout=250ms",
...                         map={"points": [{"name": "t", "table": "input", "address": 0}]})
>>> o.rate, o.timeout_s, o.retries, o.regmap.names
(5.0, 0.25, 1, ('t',))
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.errors import ConfigError
from firmware_bridge.modbus.client import ModbusURL, parse_modbus_url
from firmware_bridge.modbus.regmap import RegisterMap, load_map, parse_map
from firmware_bridge.parsing import parse_duration

__all__ = ["URL_KEYS", "OPTIONS", "ModbusOptions"]

#: query keys the source understands (transport keys are handled by client.py)
URL_KEYS = ("map", "rate", "timeout", "retries")
#: keyword options of the source
OPTIONS = ("map", "rate", "timeout_s", "retries", "channels", "backoff_s", "backoff_max_s")


@dataclass(frozen=True)
class ModbusOptions:
    """A Modbus source's checked options (see :class:`~firmware_bridge.sources.modbus.ModbusSource`)."""

    link: ModbusURL
    regmap: RegisterMap
    rate: float
    timeout_s: float
    retries: int
    backoff_s: float
    backoff_max_s: float

    @classmethod
    def check(cls, url: str, *, map: str | Path | RegisterMap | dict | None = None,
              rate: float | str | None = None, timeout_s: float | str | None = None,
              retries: int | str | None = None, channels: Sequence[str] | None = None,
              backoff_s: float = 0.2, backoff_max_s: float = 5.0,
              unknown: dict | None = None) -> ModbusOptions:
        """Keyword options override the URL's query keys; ``unknown`` holds any other
        keyword the caller was given (an error naming the closest option)."""
        if unknown:
            key = sorted(unknown)[0]
            close = difflib.get_close_matches(key, OPTIONS, 1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected {', '.join(OPTIONS)}"
            raise ConfigError(f"{url}: unknown option {key!r} for a Modbus source ({hint})")
        link = parse_modbus_url(url)
        q = dict(link.params)
        for key in q:
            if key not in URL_KEYS:
                close = difflib.get_close_matches(key, URL_KEYS + ("baud", "parity", "stopbits"), 1)
                hint = f"did you mean {close[0]!r}?" if close else f"expected {', '.join(URL_KEYS)}"
                raise ConfigError(f"{url}: unknown option {key}= ({hint})")
        regmap = _select(url, _resolve_map(url, map if map is not None else q.get("map")), channels)
        rate_v = _positive(url, "rate", rate if rate is not None else q.get("rate", 10.0), 1000.0)
        t = timeout_s if timeout_s is not None else q.get("timeout", 0.5)
        timeout_v = _positive(url, "timeout", parse_duration(t, f"{url}: timeout"), 60.0)
        r = retries if retries is not None else q.get("retries", 1)
        try:
            retries_v = int(r)
        except (TypeError, ValueError):
            raise ConfigError(f"{url}: retries={r!r} is not an integer") from None
        if not 0 <= retries_v <= 10:
            raise ConfigError(f"{url}: retries={retries_v} is not in 0..10")
        if not 0 < backoff_s <= backoff_max_s:
            raise ConfigError(f"{url}: backoff {backoff_s} s must be > 0 and <= max {backoff_max_s} s")
        return cls(link, regmap, rate_v, timeout_v, retries_v, float(backoff_s), float(backoff_max_s))


def _positive(url: str, key: str, value, hi: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{url}: {key}={value!r} is not a number") from None
    if not 0 < v <= hi:
        raise ConfigError(f"{url}: {key}={v:g} is not in (0, {hi:g}]")
    return v


def _select(url: str, regmap: RegisterMap, channels: Sequence[str] | None) -> RegisterMap:
    """Keep only the points named in ``channels``, in that order (all if None)."""
    if channels is None:
        return regmap
    if isinstance(channels, str):
        channels = [c.strip() for c in channels.split(",") if c.strip()]
    if not channels:
        raise ConfigError(f"{url}: channels is empty (name points of the map, or leave it out)")
    points = []
    for name in channels:
        if name not in regmap.names:
            close = difflib.get_close_matches(name, regmap.names, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{url}: channel {name!r} is not a point of {regmap.source}{hint}")
        if any(p.name == name for p in points):
            raise ConfigError(f"{url}: channel {name!r} is listed twice")
        points.append(regmap.point(name))
    return dataclasses.replace(regmap, points=tuple(points))


def _resolve_map(url: str, spec) -> RegisterMap:
    if spec is None or spec == "":
        raise ConfigError(f"{url}: no register map (add ?map=pump.toml to the URL or pass map=)")
    if isinstance(spec, RegisterMap):
        return spec
    if isinstance(spec, dict):
        return parse_map(spec, source=f"{url} map")
    return load_map(spec)
