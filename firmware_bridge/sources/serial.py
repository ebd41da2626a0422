"""The serial source: CSV lines or binary frames from a serial port, as blocks.

URL forms (everything after ``serial://`` is handed to ``serial.serial_for_url``)::

    serial:///dev/ttyUSB0?baud=921600&format=frames
    serial:///dev/serial/by-id/usb-Espressif_ESP32-if00?format=csv&channels=ax,ay,az
    serial://loop://?format=csv                 (pyserial loopback: what is written is read)
    serial://socket://127.0.0.1:7000?format=frames
    serial://rfc2217://10.0.0.5:2217?baud=115200

Query parameters: ``baud`` (default 115200), ``format`` (``csv``, ``frames``; default:
detected from the first bytes), ``channels`` (comma list), ``rate`` (samples/s; default
estimated), ``block`` (max rows per CSV block, default 256). Keyword options override them.

The reader thread reads whatever has arrived (``read(in_waiting)``, never ``readline``;
the transport is :mod:`firmware_bridge.sources.serialport`), feeds the pure decoder of
:mod:`firmware_bridge.codec`, and hands one :class:`Block` per frame (binary) or per read
(CSV, split at ``block_samples`` rows) to ``on_block``. Rows are never held back waiting
for more, so a block's latency is one read. Commands (``STOP``) wait for the device's ack
(:mod:`firmware_bridge.sources.serialacks`).

When the port fails (USB unplugged, pty closed), the source reports an ``outage`` event,
reopens with exponential backoff (waiting on an Event, never spinning) and reports
``recovered``; the first block after that carries ``Quality.RECOVERED | Quality.GAP``.
"""

from __future__ import annotations

import contextlib
import io
import select
import threading
import time
from collections.abc import Callable

import numpy as np
import serial

from firmware_bridge.block import Block, Quality
from firmware_bridge.codec import detect_format
from firmware_bridge.codec.csvlines import CsvDecoder
from firmware_bridge.codec.frames import DecodedFrame, FrameDecoder, Message
from firmware_bridge.errors import ConfigError, PortError, TripError
from firmware_bridge.parsing import split_url
from firmware_bridge.sources.base import BlockSink, EventSink, Source
from firmware_bridge.sources.serialacks import Acks
from firmware_bridge.sources.serialport import open_port, read_until_stopped

__all__ = ["SerialSource"]

_KNOWN_PARAMS = ("baud", "format", "channels", "rate", "block")
#: stats() name -> decoder counter name
_STAT_NAMES = {"crc_errors": "crc_errors", "rejected_frames": "rejected", "bytes_skipped": "bytes_skipped",
               "gaps": "gaps", "missed_frames": "missed", "restarts": "restarts", "frames": "frames",
               "bad_lines": "bad_lines", "lines": "lines"}


class SerialSource(Source):
    """A serial port streaming CSV lines or binary frames (see the module docstring)."""

    kind = "serial"

    def __init__(
        self,
        url: str,
        on_block: BlockSink,
        on_event: EventSink | None = None,
        *,
        channels: tuple[str, ...] | list[str] | str | None = None,
        baud: int | None = None,
        format: str | None = None,
        rate: float | None = None,
        block_samples: int | None = None,
        reopen_backoff: tuple[float, float] = (0.1, 1.0),
        read_timeout: float = 0.1,
        strict: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(url, on_block, on_event, clock)
        scheme, port, query = split_url(url)
        if scheme != "serial":
            raise ConfigError(f"source URL {url!r}: expected a serial:// URL")
        unknown = sorted(set(query) - set(_KNOWN_PARAMS))
        if unknown:
            raise ConfigError(f"source URL {url!r}: unknown parameter {unknown[0]!r} "
                              f"(known: {', '.join(_KNOWN_PARAMS)})")
        if not port:
            raise ConfigError(f"source URL {url!r}: no port (e.g. serial:///dev/ttyUSB0)")
        self.port_name = port
        self.baud = int(baud if baud is not None else _num(query, "baud", 115200, url))
        self.format = format if format is not None else query.get("format") or None
        if self.format not in (None, "csv", "frames"):
            raise ConfigError(f"source URL {url!r}: format={self.format!r} is not one of csv, frames")
        if channels is None and query.get("channels"):
            channels = query["channels"]
        if isinstance(channels, str):
            channels = [c.strip() for c in channels.split(",") if c.strip()]
        self._fixed_channels = tuple(channels) if channels else None
        self.channels = self._fixed_channels or ()
        self.rate_fixed = float(rate if rate is not None else _num(query, "rate", 0.0, url))
        self.block_samples = int(block_samples or _num(query, "block", 256, url))
        if self.block_samples < 1:
            raise ConfigError(f"source URL {url!r}: block={self.block_samples} must be >= 1")
        self.reopen_backoff = (float(reopen_backoff[0]), float(reopen_backoff[1]))
        self.read_timeout = read_timeout
        self.strict = strict
        self._port: serial.SerialBase | None = None
        self._preopened: serial.SerialBase | None = None
        self._write_lock = threading.Lock()
        self._acks = Acks()
        self._decoder: FrameDecoder | CsvDecoder | None = None
        self._probe = b""
        self._retired: dict[str, int] = {}
        self._pending_quality = Quality.GOOD
        self._bad_lines_seen = 0
        self._rate_est = 0.0
        self._prev_frame: tuple[int, int] | None = None  # (t0_us, n) of the last frame
        self._csv_window: tuple[float, int] | None = None  # (start time, rows since)
        self._seq = 0
        self._counts = dict(blocks=0, samples=0, bytes=0, outages=0, reopen_attempts=0,
                            messages=0, acks=0, shape_errors=0)

    # ------------------------------------------------------------ public API

    def open_check(self) -> None:
        """Open and close the port once; raise :class:`PortError` with a one-line fix."""
        self._open().close()

    def start(self) -> None:
        """Start the reader thread. With ``strict=True`` the port is opened here first,
        so a wrong path or missing permission raises :class:`PortError` at once."""
        if self.strict:
            self._preopened = self._open()
        super().start()

    def send_command(self, cmd: str, timeout_s: float) -> float:
        """Write ``cmd`` + newline to the device and wait for its ack (``#ack CMD`` line
        or ``ack CMD`` message frame). Returns seconds from the write to the read that
        brought the ack; raises :class:`TripError` on timeout or if the port is down."""
        cmd = cmd.strip()
        with self._acks.waiting(cmd) as waiter:
            with self._write_lock:
                port = self._port
                if port is None:
                    raise TripError(f"serial port {self.port_name}: port is down, cannot send {cmd}")
                t_sent = time.perf_counter()
                try:
                    port.write(cmd.encode("ascii") + b"\n")
                except (serial.SerialException, OSError) as exc:
                    raise TripError(f"serial port {self.port_name}: writing {cmd} failed: {exc}") from exc
            if not waiter.event.wait(timeout_s):
                raise TripError(f"serial port {self.port_name}: no ack for {cmd} within {timeout_s:g} s")
            if waiter.error:
                raise TripError(f"serial port {self.port_name}: {cmd} not acknowledged: {waiter.error}")
            return max(0.0, waiter.t_ack - t_sent)

    def write(self, data: bytes) -> None:
        """Write raw bytes to the device (thread-safe with the reader and commands).
        Raises :class:`PortError` if the port is not open."""
        with self._write_lock:
            port = self._port
            if port is None:
                raise PortError(f"serial port {self.port_name}: not open, cannot write")
            try:
                port.write(data)
            except (serial.SerialException, OSError) as exc:
                raise PortError(f"serial port {self.port_name}: write failed: {exc}") from exc

    def try_write(self, data: bytes) -> bool:
        """Write ``data`` unless a command is being written right now or earlier bytes still
        wait in the output queue: False, and nothing written, rather than wait for the port
        (for the heartbeat, which must never make a STOP wait). Raises :class:`PortError`
        if the port is not open or the write fails."""
        if not self._write_lock.acquire(blocking=False):
            return False
        try:
            port = self._port
            if port is None:
                raise PortError(f"serial port {self.port_name}: not open, cannot write")
            try:
                if _queued(port):
                    return False
                port.write(data)
            except (serial.SerialException, OSError) as exc:
                raise PortError(f"serial port {self.port_name}: write failed: {exc}") from exc
        finally:
            self._write_lock.release()
        return True

    @property
    def is_open(self) -> bool:
        """True while the reader holds an open port."""
        return self._port is not None

    def stats(self) -> dict[str, float]:
        """Counters: blocks, samples, bytes, crc_errors, gaps, missed_frames, bad_lines,
        outages, reopen_attempts (failed opens), and more (rejected_frames, bytes_skipped, ...)."""
        dec = dict(self._retired)
        for k, v in (self._decoder.counters() if self._decoder else {}).items():
            dec[k] = dec.get(k, 0) + v
        out: dict[str, float] = dict(self._counts, rate=self.rate_fixed or self._rate_est)
        for ours, theirs in _STAT_NAMES.items():
            out[ours] = dec.get(theirs, 0)
        return out

    # ------------------------------------------------------------ port handling

    def _open(self) -> serial.SerialBase:
        return open_port(self.port_name, self.baud, self.read_timeout)

    def _close(self) -> None:
        port = self._port
        if port is not None and hasattr(port, "cancel_read"):
            with contextlib.suppress(Exception):  # best-effort wake-up of the reader
                port.cancel_read()

    def _run(self) -> None:
        lo, hi = self.reopen_backoff
        delay = lo
        outage = False  # an outage happened: the next successful open is a recovery
        last_error = ""
        while not self._stop.is_set():
            port, self._preopened = self._preopened, None
            if port is None:
                try:
                    port = self._open()
                except PortError as exc:
                    self._counts["reopen_attempts"] += 1
                    if str(exc) != last_error:
                        last_error = str(exc)
                        self.emit_event("error", last_error)
                    self._stop.wait(delay)
                    delay = min(delay * 2, hi)
                    continue
            delay, last_error = lo, ""
            with self._write_lock:
                self._port = port
            if outage:
                outage = False
                self._pending_quality |= Quality.RECOVERED | Quality.GAP
                self.emit_event("recovered", f"serial port {self.port_name}: reopened, data flowing again")
            else:
                self.emit_event("info", f"serial port {self.port_name}: open at {self.baud} baud, "
                                f"format={self.format or 'auto'}")
            try:
                read_until_stopped(port, self._stop, self.read_timeout, self._handle)
            except (serial.SerialException, OSError) as exc:
                if not self._stop.is_set():
                    self._counts["outages"] += 1
                    outage = True
                    self.emit_event("outage", f"serial port {self.port_name}: {exc}; reopening with backoff")
                    self._acks.fail_all("port went down")
            finally:
                with self._write_lock:
                    self._port = None
                with contextlib.suppress(Exception):  # closing a dead port may fail
                    port.close()
                self._retire_decoder()
            if outage:
                self._stop.wait(delay)
        self._acks.fail_all("source stopped")

    def _retire_decoder(self) -> None:
        """Keep the counters of a decoder being replaced after a reopen (its buffered
        partial frame/line belongs to the dead connection)."""
        dec = self._decoder
        if dec is None:
            return
        for k, v in dec.counters().items():
            self._retired[k] = self._retired.get(k, 0) + v
        if isinstance(dec, FrameDecoder):
            # frames lost during the outage are counted as missed
            fresh: FrameDecoder | CsvDecoder = FrameDecoder(last_seq=dec.last_seq)
        else:
            fresh = CsvDecoder(self._fixed_channels)
            fresh.channels = dec.channels
        self._decoder = fresh
        self._bad_lines_seen = 0
        self._probe = b""

    # ------------------------------------------------------------ decoding

    def _handle(self, data: bytes, t_recv: float) -> None:
        self._counts["bytes"] += len(data)
        dec = self._decoder
        if dec is None:
            fmt = self.format
            if fmt is None:
                self._probe += data
                fmt = detect_format(self._probe)
                if fmt is None:
                    return
                data, self._probe = self._probe, b""
                self.emit_event("info", f"serial port {self.port_name}: detected format={fmt}")
            self.format = fmt
            dec = self._decoder = FrameDecoder() if fmt == "frames" else CsvDecoder(self._fixed_channels)
        if isinstance(dec, FrameDecoder):
            for item in dec.feed(data):
                if isinstance(item, Message):
                    self._message(item.text, t_recv)
                else:
                    self._frame_block(item, t_recv)
        else:
            rows, messages = dec.feed(data)
            for text in messages:
                self._message(text, t_recv)
            if rows.shape[0]:
                self._csv_blocks(dec, rows, t_recv)

    def _message(self, text: str, t_recv: float) -> None:
        self._counts["messages"] += 1
        words = text.split()
        if len(words) >= 2 and words[0].lower() == "ack":
            self._acks.acked(words[1], t_recv)
            self._counts["acks"] += 1
            return
        self.emit_event("info", f"serial port {self.port_name}: device says {text!r}")

    def _frame_block(self, frame: DecodedFrame, t_recv: float) -> None:
        n, ch = frame.samples.shape
        if not self.channels or (len(self.channels) != ch and self._fixed_channels is None):
            self.channels = tuple(f"ch{i}" for i in range(ch))
        if len(self.channels) != ch:
            self._counts["shape_errors"] += 1
            if self._counts["shape_errors"] == 1:
                self.emit_event("error", f"serial port {self.port_name}: frame {frame.seq} has {ch} "
                                f"channels, configured {len(self.channels)} ({','.join(self.channels)}); dropped")
            return
        quality = self._pending_quality
        if frame.missed or frame.restart:
            quality |= Quality.GAP
        if frame.rejected:
            quality |= Quality.CRC
        prev, self._prev_frame = self._prev_frame, (frame.t0_us, n)
        if prev is not None and not (frame.missed or frame.restart) and frame.t0_us > prev[0]:
            inst = prev[1] * 1e6 / (frame.t0_us - prev[0])
            self._rate_est = inst if not self._rate_est else 0.9 * self._rate_est + 0.1 * inst
        if n == 0:  # a heartbeat frame: no block, its flags go to the next one
            self._pending_quality = quality
            return
        self._emit(frame.t0_us * 1e-6, frame.samples, frame.seq, quality, t_recv,
                   {"t0_clock": "device", "sample_type": frame.sample_type})

    def _csv_blocks(self, dec: CsvDecoder, rows: np.ndarray, t_recv: float) -> None:
        self.channels = dec.channels
        now = self.clock()
        start, count = self._csv_window or (now, -rows.shape[0])
        count += rows.shape[0]  # rows since ``start`` (the first read only starts the clock)
        if now - start >= 1.0:  # rate estimate over windows of >= 1 s of arrivals
            self._rate_est, start, count = count / (now - start), now, 0
        self._csv_window = (start, count)
        quality = self._pending_quality
        if dec.bad_lines != self._bad_lines_seen:
            self._bad_lines_seen = dec.bad_lines
            quality |= Quality.CRC
        rate = self.rate_fixed or self._rate_est
        t_first = now - (rows.shape[0] - 1) / rate if rate > 0 else now
        for i in range(0, rows.shape[0], self.block_samples):
            part = rows[i : i + self.block_samples]
            t0 = t_first + i / rate if rate > 0 else now
            self._emit(t0, part, self._seq, quality, t_recv, {"t0_clock": "host"})
            self._seq += 1
            quality = Quality.GOOD

    def _emit(self, t0: float, samples: np.ndarray, seq: int, quality: Quality,
              t_recv: float, meta: dict) -> None:
        self._pending_quality = Quality.GOOD
        block = Block(t0=t0, rate=self.rate_fixed or self._rate_est, samples=samples,
                      channels=self.channels, seq=seq, quality=quality,
                      source=self.url, t_recv=t_recv, meta=meta)
        self._counts["blocks"] += 1
        self._counts["samples"] += block.n
        try:
            self.on_block(block)
        except Exception as exc:  # a consumer bug must not kill the reader
            self.emit_event("error", f"serial port {self.port_name}: on_block raised {exc!r}")


def _queued(port: serial.SerialBase) -> bool:
    """True if a write could wait now: the port's descriptor is not writable (a full pty
    or UART buffer), or bytes still wait in its output queue (where the driver tells)."""
    try:
        fd = port.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation, serial.SerialException):
        fd = None  # loop://, socket://: pyserial's own buffers
    if fd is not None:
        try:
            if not select.select((), (fd,), (), 0)[1]:
                return True
        except (OSError, ValueError):
            return True
    try:
        return int(port.out_waiting or 0) > 0
    except (AttributeError, NotImplementedError, OSError, serial.SerialException):
        return False


def _num(query: dict[str, str], key: str, default: float, url: str) -> float:
    text = query.get(key)
    if text is None or text == "":
        return default
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"source URL {url!r}: {key}={text!r} is not a number") from None
