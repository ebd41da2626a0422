"""The source interface and the URL dispatcher.

A source is opened from a URL; the scheme picks the module (as pyserial does with
``serial_for_url``). An unknown scheme is a :class:`ConfigError` naming it.

    serial:///dev/ttyUSB0?baud=921600&format=frames
    serial://loop://?format=csv            (any pyserial URL after ``serial://``)
    modbus-tcp://plc:502?map=pump.toml&rate=10
    modbus-rtu:///dev/ttyUSB1?baud=19200&map=pump.toml
    sim://pump?fault=outer_race&at=30s&rate=25600

A started source runs its own reader thread and hands every :class:`Block` to the
``on_block`` callback, and every notable event (outage, recovery, decoder errors) to
``on_event``. The callback must not block for long (the gateway puts blocks on a
bounded queue).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from firmware_bridge.block import Block
from firmware_bridge.errors import ConfigError


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """Something a person should know about a source: ``kind`` is one of
    ``outage``, ``recovered``, ``error``, ``info``."""

    kind: str
    source: str
    message: str
    t: float = 0.0


BlockSink = Callable[[Block], None]
EventSink = Callable[[SourceEvent], None]


class Source:
    """Base class of every source: a reader thread feeding ``on_block``.

    Subclasses implement :meth:`_run`, which loops until ``self._stop`` is set.
    """

    #: short name used in logs and metrics; set by subclasses
    kind = "source"

    def __init__(
        self,
        url: str,
        on_block: BlockSink,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.on_block = on_block
        self.on_event = on_event or (lambda ev: None)
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.channels: tuple[str, ...] = ()

    def emit_event(self, kind: str, message: str) -> None:
        self.on_event(SourceEvent(kind, self.url, message, self.clock()))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self.kind}-reader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._close()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, float]:
        """Counters (blocks, samples, crc_errors, gaps, outages, ...)."""
        return {}

    def _run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        """Release the transport so a blocked read returns. Default: nothing."""


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
    """
    if isinstance(text, int | float):
        return float(text)
    s = str(text).strip().lower()
    units = (("ms", 1e-3), ("us", 1e-6), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for suffix, mult in units:
        if s.endswith(suffix):
            try:
                return float(s[: -len(suffix)]) * mult
            except ValueError:
                break
    try:
        return float(s)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a duration (e.g. 30s, 250ms, 2m)") from None


def open_source(
    url: str,
    on_block: BlockSink,
    on_event: EventSink | None = None,
    **options,
) -> Source:
    """Open (but do not start) the source named by ``url``.

    ``options`` override query parameters (e.g. ``channels=("ax","ay","az")`` from config).
    """
    scheme, _, _ = split_url(url)
    if scheme == "serial":
        from firmware_bridge.serial_source import SerialSource

        return SerialSource(url, on_block, on_event, **options)
    if scheme in ("modbus-tcp", "modbus-rtu"):
        from firmware_bridge.modbus.source import ModbusSource

        return ModbusSource(url, on_block, on_event, **options)
    if scheme == "sim":
        from firmware_bridge.sim.source import SimSource

        return SimSource(url, on_block, on_event, **options)
    raise ConfigError(
        f"source URL {url!r}: unknown scheme {scheme!r} "
        "(expected serial, modbus-tcp, modbus-rtu or sim)"
    )


