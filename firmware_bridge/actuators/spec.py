"""The configuration of one trip actuator, checked when it is loaded.

An actuator is what stops the machine: a Modbus coil or holding register on a PLC or
drive, a ``STOP`` line on the sensor's own serial port, or a command hook (a relay
board's CLI, a GPIO helper). Every field is validated by :meth:`ActuatorSpec.from_dict`
and a bad value is a :class:`ConfigError` naming its key path:

>>> ActuatorSpec.from_dict({"kind": "modbus-coill", "url": "modbus-tcp://plc:502"})
Traceback (most recent call last):
...
firmware_bridge.errors.ConfigError: trip[0].kind: 'modbus-coill' is not one of modbus-coil, modbus-register, serial-command, command
>>> spec = ActuatorSpec.from_dict({"kind": "modbus-coil", "url": "modbus-tcp://plc:502",
...                                "address": 3, "timeout": "250ms"}, key="trip[1]")
>>> spec.address, spec.timeout_s, spec.retries, spec.key
(3, 0.25, 2, 'trip[1]')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from firmware_bridge.errors import ConfigError
from firmware_bridge.parsing import parse_duration, split_url

KINDS = ("modbus-coil", "modbus-register", "serial-command", "command")
#: holding-register types a ``modbus-register`` actuator can write (the register-map codec's)
REGISTER_TYPES = ("int16", "uint16", "int32", "uint32", "int64", "float32", "float64")
_URL_SCHEMES = {
    "modbus-coil": ("modbus-tcp", "modbus-rtu"),
    "modbus-register": ("modbus-tcp", "modbus-rtu"),
    "serial-command": ("serial",),
}


@dataclass(frozen=True, slots=True)
class ActuatorSpec:
    """One trip actuator.

    ``kind``: ``modbus-coil`` | ``modbus-register`` | ``serial-command`` | ``command``.
    ``url``: ``modbus-tcp://host:port``, ``modbus-rtu:///dev/ttyUSB1?baud=19200``, or a
    serial source URL (``serial:///dev/ttyACM0?baud=115200&format=frames``).
    ``trip_value``/``reset_value``: for a coil 0/1; for a holding register a number
    written as ``value_type`` (``type`` in config: int16, uint16, int32, uint32, int64,
    float32, float64; default float32 if a value is a float, else int16/uint16) with
    ``byte_order``/``word_order``, by the register-map codec.
    ``argv``/``reset_argv``: the command hook (no shell). ``timeout_s`` bounds each
    attempt's every step; a failed action is tried ``retries`` more times, ``retry_pause_s``
    apart. ``verify`` reads a written coil/register back and compares.
    ``name`` labels the actuator in logs (default: ``key``, the config key path).
    """

    kind: str
    url: str = ""
    device_id: int = 1
    address: int = 0
    trip_value: int | float = 1
    reset_value: int | float = 0
    argv: tuple[str, ...] = ()
    reset_argv: tuple[str, ...] = ()
    timeout_s: float = 0.5
    retries: int = 2
    verify: bool = True
    word_order: str = "big"
    byte_order: str = "big"
    value_type: str = ""
    retry_pause_s: float = 0.02
    name: str = ""
    key: str = "trip"

    @property
    def label(self) -> str:
        """How logs and errors name this actuator."""
        return self.name or self.key

    @property
    def register_type(self) -> str:
        """The register type written: ``value_type`` if given, else float32 when either
        value is a float, int16 when one is negative, uint16 otherwise."""
        if self.value_type:
            return self.value_type
        values = (self.trip_value, self.reset_value)
        if any(isinstance(v, float) for v in values):
            return "float32"
        return "int16" if any(v < 0 for v in values) else "uint16"

    def register_words(self, value: int | float) -> list[int]:
        """The registers written for ``value`` (the Modbus codec's encoding).

        >>> s = ActuatorSpec("modbus-register", "modbus-tcp://plc", trip_value=1.5)
        >>> s.register_words(s.trip_value), s.register_words(s.reset_value)
        ([16320, 0], [0, 0])
        """
        from firmware_bridge.modbus.codec import encode_value
        from firmware_bridge.modbus.regmap import Point

        point = Point(self.label, self.device_id, "holding", self.address, self.register_type,
                      byte_order=self.byte_order, word_order=self.word_order)
        return encode_value(point, value)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], key: str = "trip[0]") -> ActuatorSpec:
        """Build and validate a spec from a config table; errors name ``key``."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{key}: expected a table, got {type(d).__name__}")
        known = {f.name for f in fields(cls)} - {"key"}
        aliases = {"timeout": "timeout_s", "retry_pause": "retry_pause_s", "type": "value_type"}
        v: dict[str, Any] = {}
        for k, val in d.items():
            name = aliases.get(k, k)
            if name not in known:
                raise ConfigError(
                    f"{key}.{k}: unknown key (expected one of {', '.join(sorted(known))})"
                )
            v[name] = val
        kind = v.get("kind")
        if kind is None:
            raise ConfigError(f"{key}.kind: missing (one of {', '.join(KINDS)})")
        if kind not in KINDS:
            raise ConfigError(f"{key}.kind: {kind!r} is not one of {', '.join(KINDS)}")
        out: dict[str, Any] = {"kind": kind, "key": key}
        out["url"] = _url(v.get("url", ""), kind, f"{key}.url")
        out["device_id"] = _int(v.get("device_id", 1), f"{key}.device_id", 0, 255)
        out["address"] = _int(v.get("address", 0), f"{key}.address", 0, 65535)
        for f in ("trip_value", "reset_value"):
            default = 1 if f == "trip_value" else 0
            out[f] = _value(v.get(f, default), kind, f"{key}.{f}")
        for f in ("argv", "reset_argv"):
            out[f] = _argv(v.get(f, ()), f"{key}.{f}")
        if kind == "command" and not out["argv"]:
            raise ConfigError(f"{key}.argv: missing (the command to run, e.g. [\"relayctl\", \"off\"])")
        out["timeout_s"] = _duration(v.get("timeout_s", 0.5), f"{key}.timeout", 1e-3, 600.0)
        out["retry_pause_s"] = _duration(v.get("retry_pause_s", 0.02), f"{key}.retry_pause", 0.0, 10.0)
        out["retries"] = _int(v.get("retries", 2), f"{key}.retries", 0, 20)
        out["verify"] = _bool(v.get("verify", True), f"{key}.verify")
        for f in ("word_order", "byte_order"):
            order = v.get(f, "big")
            if order not in ("big", "little"):
                raise ConfigError(f"{key}.{f}: {order!r} is not one of big, little")
            out[f] = order
        vt = v.get("value_type", "")
        if vt and vt not in REGISTER_TYPES:
            raise ConfigError(f"{key}.type: {vt!r} is not one of {', '.join(REGISTER_TYPES)}")
        out["value_type"] = vt
        name = v.get("name", "")
        if not isinstance(name, str):
            raise ConfigError(f"{key}.name: {name!r} is not a string")
        out["name"] = name
        spec = cls(**out)
        if kind == "modbus-register":
            for f in ("trip_value", "reset_value"):
                try:
                    spec.register_words(out[f])
                except ConfigError as e:
                    msg = str(e).removeprefix(f"{spec.label}: ")
                    raise ConfigError(f"{key}.{f}: {msg} (set type, e.g. \"int32\")") from None
        return spec


def _int(x: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise ConfigError(f"{key}: {x!r} is not an integer")
    if not lo <= x <= hi:
        raise ConfigError(f"{key}: {x} is not in {lo}..{hi}")
    return x


def _bool(x: Any, key: str) -> bool:
    if not isinstance(x, bool):
        raise ConfigError(f"{key}: {x!r} is not true or false")
    return x


def _duration(x: Any, key: str, lo: float, hi: float) -> float:
    if isinstance(x, bool):
        raise ConfigError(f"{key}: {x!r} is not a duration (e.g. 500ms, 2s)")
    s = parse_duration(x, key)
    if not lo <= s <= hi:
        raise ConfigError(f"{key}: {x!r} is not between {lo:g} s and {hi:g} s")
    return s


def _url(url: Any, kind: str, key: str) -> str:
    schemes = _URL_SCHEMES.get(kind)
    if not isinstance(url, str):
        raise ConfigError(f"{key}: {url!r} is not a string")
    if schemes is None:
        return url
    if not url:
        raise ConfigError(f"{key}: missing (e.g. {schemes[0]}://...)")
    if "://" not in url:
        raise ConfigError(f"{key}: {url!r} has no scheme (expected {' or '.join(schemes)}://...)")
    scheme, rest, _ = split_url(url)
    if scheme not in schemes:
        raise ConfigError(
            f"{key}: scheme {scheme!r} does not fit kind {kind!r} (expected {' or '.join(schemes)})"
        )
    if not rest:
        raise ConfigError(f"{key}: {url!r} names no host or port")
    if scheme.startswith("modbus"):
        from firmware_bridge.modbus.client import parse_modbus_url

        try:
            parse_modbus_url(url)
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from None
    return url


def _value(x: Any, kind: str, key: str) -> int | float:
    if isinstance(x, bool):
        x = int(x)
    if not isinstance(x, int | float):
        raise ConfigError(f"{key}: {x!r} is not a number")
    if kind == "modbus-coil" and x not in (0, 1):
        raise ConfigError(f"{key}: {x!r} is not 0 or 1 (a coil is a single bit)")
    if kind == "modbus-coil":
        return int(x)
    return x


def _argv(x: Any, key: str) -> tuple[str, ...]:
    if isinstance(x, str):
        raise ConfigError(
            f"{key}: {x!r} is a string; give a list of arguments (no shell), e.g. {x.split()!r}"
        )
    if not isinstance(x, list | tuple):
        raise ConfigError(f"{key}: {x!r} is not a list of strings")
    for i, a in enumerate(x):
        if not isinstance(a, str):
            raise ConfigError(f"{key}[{i}]: {a!r} is not a string")
    if x and not x[0]:
        raise ConfigError(f"{key}[0]: empty program name")
    return tuple(x)
