"""Parsing shared by sources, actuators and the simulator: URLs and durations."""

from __future__ import annotations

import math
from urllib.parse import parse_qsl

from firmware_bridge.errors import ConfigError

__all__ = ["split_url", "parse_duration"]


def split_url(url: str) -> tuple[str, str, dict[str, str]]:
    """Split a source URL into ``(scheme, rest, query)``.

    >>> split_url("serial:///dev/ttyUSB0?baud=921600&format=frames")
    ('serial', '/dev/ttyUSB0', {'baud': '921600', 'format': 'frames'})
    >>> split_url("serial://loop://?format=csv")
    ('serial', 'loop://', {'format': 'csv'})
    >>> split_url("modbus-tcp://127.0.0.1:5020?map=pump.toml")
    ('modbus-tcp', '127.0.0.1:5020', {'map': 'pump.toml'})
    """
    if "://" not in url:
        raise ConfigError(f"source URL {url!r} has no scheme (expected e.g. serial:///dev/ttyUSB0)")
    scheme, rest = url.split("://", 1)
    query: dict[str, str] = {}
    if "?" in rest:
        rest, qs = rest.rsplit("?", 1)
        query = dict(parse_qsl(qs, keep_blank_values=True))
    return scheme.lower(), rest, query


def parse_duration(text: str | float | int, key: str = "duration") -> float:
    """Parse ``"30s"``, ``"250ms"``, ``"2m"``, ``"1h"`` or a number of seconds.

    >>> parse_duration("250ms"), parse_duration("2m"), parse_duration(3)
    (0.25, 120.0, 3.0)

    ``true``, ``inf`` and ``nan`` are not durations (a watchdog timeout of ``inf`` would
    never fire):

    >>> parse_duration(float("inf"), "watchdog.timeout")
    Traceback (most recent call last):
    ...
    firmware_bridge.errors.ConfigError: watchdog.timeout: inf is not a duration (e.g. 30s, 250ms, 2m)
    """
    if isinstance(text, bool):
        raise ConfigError(f"{key}: {text!r} is not a duration (e.g. 30s, 250ms, 2m)")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        seconds = _seconds(str(text).strip().lower())
    if seconds is None or not math.isfinite(seconds):
        raise ConfigError(f"{key}: {text!r} is not a duration (e.g. 30s, 250ms, 2m)")
    return seconds


def _seconds(s: str) -> float | None:
    units = (("ms", 1e-3), ("us", 1e-6), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for suffix, mult in units:
        if s.endswith(suffix):
            try:
                return float(s[: -len(suffix)]) * mult
            except ValueError:
                return None
    try:
        return float(s)
    except ValueError:
        return None
