"""``ModbusSource``: poll a register map over Modbus TCP or RTU, one block per poll.

config → check → plan → **gather**. The map is checked and planned once; then a reader
thread polls at ``rate`` polls per second and hands one :class:`Block` per poll to
``on_block``: one row, one float32 channel per point (bools as 0/1), ``point_ok`` per
channel, ``rate`` = the poll rate. A point that could not be read this poll is NaN with
``point_ok`` False, and the block is flagged ``Quality.PARTIAL``. ``t0`` is the poll's
start (``clock()``), ``t_recv`` its end (``perf_counter()``), ``meta["poll_s"]`` its length::

    modbus-tcp://127.0.0.1:5020?map=pump.toml&rate=10&timeout=250ms&retries=1
    modbus-rtu:///dev/ttyUSB1?baud=19200&parity=E&map=pump.toml

Several devices share one link (an RS-485 line, or a TCP gateway), so one dead or slow
device must not stop the others:

- a device that does not answer (timeout after ``retries``) is *down*: an ``outage``
  event, its points are not ok, and it is skipped until its backoff expires (from
  ``backoff_s``, doubling up to ``backoff_max_s``); then one single-try probe;
- a device that answers a read with a Modbus exception is alive; those points are not
  ok and an ``error`` event says which read failed and why (once, until it reads again);
- a lost link (connection refused or closed, serial port gone) takes every device down;
  reconnects are paced by the same kind of backoff (never a busy loop: pymodbus's own
  ``reconnect_delay=0`` spins a core), and each device reports ``recovered`` when it
  answers again. That block is flagged ``RECOVERED | GAP``.

A poll that overruns its period is flagged ``STALE`` and the missed ticks are skipped
(no burst of catch-up polls).
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymodbus.exceptions import ConnectionException, ModbusException

from firmware_bridge.block import Block, Quality
from firmware_bridge.modbus.client import (
    EXCEPTION_NAMES,
    describe_error,
    make_client,
)
from firmware_bridge.modbus.codec import make_decoder
from firmware_bridge.modbus.plan import ReadRequest, plan_reads
from firmware_bridge.modbus.regmap import RegisterMap
from firmware_bridge.sources.base import BlockSink, EventSink, Source
from firmware_bridge.sources.modbusoptions import ModbusOptions

#: exception codes a gateway sends for a device that is not there (treated as an outage)
_GATEWAY_NO_DEVICE = (10, 11)


@dataclass
class _Device:
    """Health of one device id on the link."""

    device_id: int
    up: bool = True
    fails: int = 0
    next_try: float = 0.0
    down_since: float = 0.0


class _LinkDown(Exception):
    """Internal: the transport failed (not one device)."""


class ModbusSource(Source):
    """Poll a register map; see the module docstring for the behaviour on failures.

    Keyword options override the URL's query keys:

    - ``map``: a TOML path, a :class:`RegisterMap` or a dict for :func:`parse_map`
      (URL ``map=``);
    - ``rate``: polls per second (URL ``rate=``, default 10);
    - ``timeout_s``: per request (URL ``timeout=`` as ``250ms``/``0.25``, default 0.5);
    - ``retries``: re-sends of an unanswered request of a live device (URL
      ``retries=``, default 1); a down device is probed with one try;
    - ``channels``: names of the map's points to read, in block order (default all);
    - ``backoff_s`` / ``backoff_max_s``: first and largest wait before probing a down
      device or reconnecting a lost link (default 0.2 s doubling to 5 s).

    ``poll_once()`` runs one poll in the caller's thread (tests, benchmarks);
    :meth:`start` runs polls at ``rate`` in the reader thread.
    """

    kind = "modbus"

    def __init__(
        self,
        url: str,
        on_block: BlockSink,
        on_event: EventSink | None = None,
        *,
        map: str | Path | RegisterMap | dict | None = None,
        rate: float | str | None = None,
        timeout_s: float | str | None = None,
        retries: int | str | None = None,
        channels: Sequence[str] | None = None,
        backoff_s: float = 0.2,
        backoff_max_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        **unknown: object,
    ) -> None:
        super().__init__(url, on_block, on_event, clock)
        o = ModbusOptions.check(url, map=map, rate=rate, timeout_s=timeout_s, retries=retries,
                                channels=channels, backoff_s=backoff_s,
                                backoff_max_s=backoff_max_s, unknown=unknown)
        self.link, self.regmap, self.rate = o.link, o.regmap, o.rate
        self.timeout_s, self.retries = o.timeout_s, o.retries
        self.backoff_s, self.backoff_max_s = o.backoff_s, o.backoff_max_s

        self.channels = self.regmap.names
        self.requests: list[ReadRequest] = plan_reads(self.regmap)
        col = {name: i for i, name in enumerate(self.channels)}
        # per request, per point: (column, decoder, offset in the read), for the hot loop
        self._decode = [
            [(col[p.name], make_decoder(p), p.address - req.address) for p in req.points]
            for req in self.requests
        ]
        self._devices = {dev: _Device(dev) for dev in self.regmap.device_ids}
        self._by_device = {
            dev: [i for i, r in enumerate(self.requests) if r.device_id == dev]
            for dev in self._devices
        }
        self._failing: set[int] = set()  # requests answered with a Modbus exception
        self._link_fails = 0
        self._link_next = 0.0
        self._client = make_client(self.link, self.timeout_s, retries=0)
        self._seq = 0
        self._counts = dict.fromkeys(
            ("polls", "requests", "timeouts", "exceptions", "link_errors", "outages",
             "recoveries", "overruns", "points_failed"), 0,
        )
        self._last_poll_s = 0.0

    # ------------------------------------------------------------------ lifecycle
    def stop(self, timeout: float = 2.0) -> None:
        super().stop(timeout)
        self._client.close()

    def _close(self) -> None:
        """Make a blocked read return at once (called from the stopping thread).

        For TCP the socket is shut down, not closed: a ``select`` in the reader thread
        wakes up on shutdown but not on a close from another thread, and the socket
        object stays valid until the reader closes it itself.
        """
        sock = getattr(self._client, "socket", None)
        if self.link.scheme == "modbus-tcp" and sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        else:
            self._client.close()

    def stats(self) -> dict[str, float]:
        s: dict[str, float] = dict(self._counts)
        s["blocks"] = self._seq
        s["devices_down"] = sum(not d.up for d in self._devices.values())
        s["last_poll_s"] = self._last_poll_s
        return s

    def _run(self) -> None:
        period = 1.0 / self.rate
        next_t = self.clock()
        while not self._stop.is_set():
            wait = next_t - self.clock()
            if wait > 0 and self._stop.wait(wait):
                break
            block = self.poll_once(period)
            if self._stop.is_set():
                break
            next_t += period
            now = self.clock()
            if now > next_t:  # overran: skip the missed ticks instead of bursting
                next_t += math.ceil((now - next_t) / period) * period
            self.on_block(block)

    # ---------------------------------------------------------------------- gather
    def poll_once(self, period: float | None = None) -> Block:
        """Read every due request once and build the block (called by the reader thread)."""
        t0 = self.clock()
        n = len(self.channels)
        values = np.full(n, np.nan, dtype=np.float32)
        ok = np.zeros(n, dtype=bool)
        recovered = False
        self._counts["polls"] += 1
        try:
            if self._ensure_link(t0):
                for dev in self._devices.values():
                    recovered |= self._poll_device(dev, values, ok)
        except _LinkDown as exc:
            self._link_down(str(exc))
        dt = self.clock() - t0
        self._last_poll_s = dt
        quality = Quality.GOOD
        if not ok.all():
            quality |= Quality.PARTIAL
            self._counts["points_failed"] += int(n - ok.sum())
        if recovered:
            quality |= Quality.RECOVERED | Quality.GAP
        if period is not None and dt > period:
            quality |= Quality.STALE
            self._counts["overruns"] += 1
        self._seq += 1
        return Block(
            t0=t0, rate=self.rate, samples=values.reshape(1, n), channels=self.channels,
            seq=self._seq, quality=quality, source=self.url, point_ok=ok,
            t_recv=time.perf_counter(), meta={"poll_s": dt},
        )

    def _poll_device(self, dev: _Device, values: np.ndarray, ok: np.ndarray) -> bool:
        """Run the device's requests; True if it came back from an outage."""
        now = self.clock()
        if not dev.up and now < dev.next_try:
            return False
        tries = 1 if not dev.up else 1 + self.retries  # a probe of a down device: one try
        answered = False
        for i in self._by_device[dev.device_id]:
            req = self.requests[i]
            try:
                data = self._read(req, tries)
            except TimeoutError as exc:
                self._device_down(dev, str(exc))
                return False
            if isinstance(data, int) and data in _GATEWAY_NO_DEVICE:
                # a TCP gateway saying the device behind it did not answer: an outage
                why = EXCEPTION_NAMES[data]
                self._device_down(dev, f"the gateway reports exception {data} ({why})")
                return False
            answered = True
            if isinstance(data, int):  # Modbus exception code
                if i not in self._failing:
                    self._failing.add(i)
                    why = EXCEPTION_NAMES.get(data, "unknown")
                    self.emit_event("error", f"{req}: Modbus exception {data} ({why})")
                continue
            if i in self._failing:
                self._failing.discard(i)
                self.emit_event("info", f"{req}: reads again")
            for col, decode, off in self._decode[i]:
                values[col] = decode(data, off)
                ok[col] = True
        if answered and not dev.up:
            self._counts["recoveries"] += 1
            down = self.clock() - dev.down_since
            self.emit_event(
                "recovered",
                f"device {dev.device_id} at {self.link.target}: answering again after {down:.1f} s",
            )
            dev.up, dev.fails = True, 0
            return True
        if answered:
            dev.fails = 0
        return False

    def _read(self, req: ReadRequest, tries: int) -> list | int:
        """Registers/bits, or the Modbus exception code; TimeoutError if no answer."""
        c = self._client
        fn = {
            "holding": c.read_holding_registers, "input": c.read_input_registers,
            "coil": c.read_coils, "discrete": c.read_discrete_inputs,
        }[req.table]
        last = ""
        for _ in range(tries):
            if self._stop.is_set():
                raise _LinkDown("source stopped")
            self._counts["requests"] += 1
            try:
                rr = fn(req.address, count=req.count, device_id=req.device_id)
            except ConnectionException as exc:
                raise _LinkDown(describe_error(exc)) from None
            except (ModbusException, OSError) as exc:
                if self._stop.is_set():
                    raise _LinkDown("source stopped") from None
                self._counts["timeouts"] += 1
                last = describe_error(exc)
                continue
            except Exception:
                if self._stop.is_set():  # the transport was closed under the read
                    raise _LinkDown("source stopped") from None
                raise
            if rr.isError():
                self._counts["exceptions"] += 1
                return int(getattr(rr, "exception_code", 0))
            return rr.bits if req.is_bit else rr.registers
        raise TimeoutError(f"{last} after {tries} tr{'y' if tries == 1 else 'ies'} of {self.timeout_s:g} s")

    # ----------------------------------------------------------- health / backoff
    def _backoff(self, fails: int) -> float:
        return min(self.backoff_s * (2 ** max(fails - 1, 0)), self.backoff_max_s)

    def _device_down(self, dev: _Device, reason: str) -> None:
        now = self.clock()
        dev.fails += 1
        dev.next_try = now + self._backoff(dev.fails)
        if dev.up:
            dev.up, dev.down_since = False, now
            self._counts["outages"] += 1
            self.emit_event(
                "outage",
                f"device {dev.device_id} at {self.link.target}: {reason}; its points are not "
                f"ok, retrying every {self.backoff_s:g}..{self.backoff_max_s:g} s",
            )

    def _ensure_link(self, now: float) -> bool:
        if self._client.connected:
            return True
        if now < self._link_next or self._stop.is_set():
            return False
        if self._client.connect():
            self._link_fails = 0
            return True
        self._link_down("cannot connect")
        return False

    def _link_down(self, reason: str) -> None:
        self._client.close()
        if self._stop.is_set():
            return
        self._counts["link_errors"] += 1
        self._link_fails += 1
        now = self.clock()
        self._link_next = now + self._backoff(self._link_fails)
        for dev in self._devices.values():
            dev.next_try = 0.0  # probe each device as soon as the link is back
            if dev.up:
                dev.up, dev.down_since, dev.fails = False, now, 1
                self._counts["outages"] += 1
                self.emit_event(
                    "outage",
                    f"device {dev.device_id}: link to {self.link.target} down ({reason}); "
                    f"reconnecting every {self.backoff_s:g}..{self.backoff_max_s:g} s",
                )
