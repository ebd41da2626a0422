"""Sources by URL scheme: the registry and :func:`open_source`.

A source is opened from a URL; the scheme picks the module (as pyserial does with
``serial_for_url``). An unknown scheme is a :class:`ConfigError` naming it.

    serial:///dev/ttyUSB0?baud=921600&format=frames
    serial://loop://?format=csv            (any pyserial URL after ``serial://``)
    modbus-tcp://plc:502?map=pump.toml&rate=10
    modbus-rtu:///dev/ttyUSB1?baud=19200&map=pump.toml
    sim://pump?fault=outer_race&at=30s&rate=25600

One module per scheme (``serial``, ``modbus``, ``sim``), imported only when its scheme is
opened; the interface they share is :mod:`firmware_bridge.sources.base`. The serial
source's transport and command acks are ``serialport`` and ``serialacks``; the Modbus
source's checked options are ``modbusoptions``.
"""

from __future__ import annotations

import importlib

from firmware_bridge.errors import ConfigError
from firmware_bridge.parsing import split_url
from firmware_bridge.sources.base import BlockSink, EventSink, Source, SourceEvent

__all__ = ["SCHEMES", "BlockSink", "EventSink", "Source", "SourceEvent", "open_source"]

#: URL scheme -> (module, class); a module is imported only when its scheme is opened
SCHEMES: dict[str, tuple[str, str]] = {
    "serial": ("firmware_bridge.sources.serial", "SerialSource"),
    "modbus-tcp": ("firmware_bridge.sources.modbus", "ModbusSource"),
    "modbus-rtu": ("firmware_bridge.sources.modbus", "ModbusSource"),
    "sim": ("firmware_bridge.sources.sim", "SimSource"),
}


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
    if scheme not in SCHEMES:
        raise ConfigError(
            f"source URL {url!r}: unknown scheme {scheme!r} "
            f"(expected {', '.join(sorted(SCHEMES))})"
        )
    module, name = SCHEMES[scheme]
    cls = getattr(importlib.import_module(module), name)
    return cls(url, on_block, on_event, **options)
