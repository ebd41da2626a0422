"""The source interface: a reader thread that hands every :class:`Block` to ``on_block``.

The callback must not block for long (the gateway puts blocks on a bounded queue); every
notable event (outage, recovery, decoder errors) goes to ``on_event``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from firmware_bridge.block import Block

__all__ = ["BlockSink", "EventSink", "Source", "SourceEvent"]


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
