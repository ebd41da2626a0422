"""Device ids (and fleet names): one rule for the config, the store, desired files and sync.

A device id becomes part of object names in a shared store (``ingest/<id>/...``,
``labels/<id>/...``, ``status/<id>.json``, ``desired/<id>.json``), of a folder on a file
share that may fold case, and of a URL path on S3. So it is held to the narrowest rule that
means the same everywhere: lower-case ASCII letters, digits, ``-`` and ``_``, starting with a
letter or digit, at most 64 characters. ``PUMP-07`` and ``pump-07`` cannot both exist, and
nothing in an id can climb out of its prefix (``..``), hide (``.x``) or need escaping.

>>> check_device_id("pump-07", "device_id")
'pump-07'
>>> check_device_id("pump 07", "device_id")
Traceback (most recent call last):
...
sensorml.errors.ConfigError: device_id: 'pump 07' is not a valid device id: use lower-case ASCII letters, digits, '-' and '_', starting with a letter or digit, at most 64 characters
>>> [is_device_id(v) for v in ("gw1", "..", ".hidden", "pümpe-7", "pump\u20107", "PUMP-07")]
[True, False, False, False, False, False]
"""

from __future__ import annotations

import re

from sensorml.errors import ConfigError

__all__ = ["DEVICE_ID_RULE", "check_device_id", "is_device_id"]

DEVICE_ID_RULE = ("lower-case ASCII letters, digits, '-' and '_', starting with a letter or "
                  "digit, at most 64 characters")
_DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def is_device_id(v: object) -> bool:
    """True when *v* follows the rule (see the module docstring)."""
    return isinstance(v, str) and _DEVICE_ID.fullmatch(v) is not None


def check_device_id(v: object, where: str, error: type[Exception] = ConfigError,
                    what: str = "device id") -> str:
    """*v* if it follows the rule, else *error* naming *where*, the value and the rule."""
    if not is_device_id(v):
        raise error(f"{where}: {v!r} is not a valid {what}: use {DEVICE_ID_RULE}")
    return v  # type: ignore[return-value]
