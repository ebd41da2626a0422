"""``sim://`` — the simulated machine as an in-process source (tests, demos, notebooks).

    sim://pump?fault=outer_race&at=30s&ramp=10s&severity=1&rate=25600&seed=1&block=256&realtime=1
    sim://motor?rpm=1480&load=0.9&schedule=0:1480,60s:1200/10s&speedup=20
    sim://replay?file=data/sim/pump_outer_race_2k.csv&columns=ax,ay,az&loop=1
    sim://pump?slow=1                                   slow values instead of vibration

Query keys: ``rate`` (samples/s, 1000–25600), ``seed``, ``block`` (samples per block,
default 256), ``realtime`` (1: paced by the host's monotonic clock; 0: as fast as the
consumer takes blocks), ``speedup`` (with realtime=1, run N× faster than real time),
``fault``/``at``/``ramp``/``severity`` (one scheduled fault), ``faults`` (several:
``imbalance@30s+10s*0.5,outer_race@1m``), ``rpm``, ``load``,
``schedule`` (speed set-points, see :mod:`firmware_bridge.sim.schedule`, or ``auto``),
``load_schedule``, ``coast``/``start`` (coast-down time constant, ramp-up time),
``duration`` (stop after this much machine time), ``channels`` (a subset of ax,ay,az).

Choice made for slow values: vibration blocks carry only ``ax, ay, az``; the slow values
at the end of each block ride along in ``Block.meta["slow"]`` (with ``meta["status"]`` and
the ground-truth ``meta["faults"]``). ``slow=1`` instead makes a source of slow values
only: 1-row blocks of ``temperature_c, current_a, pressure_bar, speed_rpm`` at
``slow_rate`` (default 10/s), as a Modbus poll of the simulated pump would give.

Each block's ``t0`` is the source's start time plus machine time (so with realtime=1 and
speedup=1 it is host ``time.monotonic()``); ``seq`` counts generated blocks, so a
``dropout`` fault (the sensor stops sending: no blocks at all) shows as a sequence gap,
an ``outage`` event, and a ``GAP|RECOVERED`` block with a ``recovered`` event after it.
:meth:`SimSource.send_command` takes ``STOP``/``RESET`` like a serial device.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from firmware_bridge.block import Block, Quality
from firmware_bridge.errors import ConfigError
from firmware_bridge.parsing import parse_duration, split_url
from firmware_bridge.sim.faults import FaultEvent, check_fault, parse_fault_schedule
from firmware_bridge.sim.machine import SLOW_CHANNELS, Machine
from firmware_bridge.sim.replay import Replay
from firmware_bridge.sim.schedule import auto_schedule, parse_schedule
from firmware_bridge.sources.base import BlockSink, EventSink, Source


class Pacer:
    """Paces a stream of samples against a monotonic clock.

    :meth:`wait_for` blocks until sample number ``n`` is due (``start + n/rate/speedup``)
    or ``stop`` is set. If it falls more than ``max_lag_s`` behind (the process was
    suspended), it re-anchors instead of bursting, and counts it in ``late``.
    """

    def __init__(
        self,
        rate: float,
        speedup: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
        max_lag_s: float = 1.0,
    ) -> None:
        self.rate, self.speedup, self.clock = rate, speedup, clock
        self.stop = stop or threading.Event()
        self.max_lag_s = max_lag_s
        self.start = clock()
        self._offset = 0.0
        self.late = 0

    def due(self, n: int) -> float:
        return self.start + self._offset + n / self.rate / self.speedup

    def wait_for(self, n: int) -> bool:
        """Wait until sample ``n`` is due; False if stopped meanwhile."""
        left = self.due(n) - self.clock()
        if left < -self.max_lag_s:
            self._offset += -left
            self.late += 1
            return not self.stop.is_set()
        if left > 0:
            return not self.stop.wait(left)
        return not self.stop.is_set()


def _flag(query: dict, key: str, default: bool) -> bool:
    v = str(query.get(key, "1" if default else "0")).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"sim URL: {key}={v!r} is not a flag (use 1 or 0)")


def _num(query: dict, key: str, default: float, kind=float):
    if key not in query:
        return default
    try:
        return kind(query[key])
    except (TypeError, ValueError):
        raise ConfigError(f"sim URL: {key}={query[key]!r} is not a number") from None


def machine_from_query(profile: str, query: dict) -> Machine | Replay:
    """Build the machine (or replay) a ``sim://`` URL or the CLI describes."""
    rate = _num(query, "rate", None)
    if profile == "replay":
        if not query.get("file"):
            raise ConfigError("sim://replay needs file=<path to a recorded CSV>")
        cols = query.get("columns")
        return Replay(
            query["file"],
            columns=tuple(c.strip() for c in cols.split(",")) if cols else None,
            rate=rate,
            loop=_flag(query, "loop", True),
        )
    faults = []
    if query.get("fault"):
        faults.append(
            FaultEvent(
                check_fault(query["fault"], "sim URL: fault"),
                at=parse_duration(query.get("at", 0), "sim URL: at"),
                severity=_num(query, "severity", 1.0),
                ramp_s=parse_duration(query.get("ramp", 0), "sim URL: ramp"),
            )
        )
    if query.get("faults"):
        faults += parse_fault_schedule(query["faults"], "sim URL: faults")
    seed = _num(query, "seed", 0, int)
    m_kwargs = dict(
        rate=25600.0 if rate is None else rate,
        seed=seed,
        load=_num(query, "load", 0.75),
        faults=faults,
        coast_s=parse_duration(query.get("coast", 2.0), "sim URL: coast"),
        start_s=parse_duration(query.get("start", 3.0), "sim URL: start"),
    )
    if "rpm" in query:
        m_kwargs["rpm"] = _num(query, "rpm", 0.0)
    sched = []
    if query.get("schedule") == "auto":
        from firmware_bridge.sim.machine import PROFILES

        nominal = PROFILES[profile].rpm if profile in PROFILES else 3000.0
        sched = auto_schedule(seed, m_kwargs.get("rpm", nominal))
    elif query.get("schedule"):
        sched = parse_schedule(query["schedule"], "rpm", "sim URL: schedule")
    if query.get("load_schedule"):
        sched += parse_schedule(query["load_schedule"], "load", "sim URL: load_schedule")
    return Machine(profile, schedule=sched, **m_kwargs)


#: query keys a ``sim://`` URL may carry
KNOWN_KEYS = (
    "rate", "seed", "block", "realtime", "speedup", "fault", "faults", "at", "ramp", "severity", "rpm",
    "load", "schedule", "load_schedule", "coast", "start", "duration", "channels", "slow",
    "slow_rate", "file", "columns", "loop",
)


class SimSource(Source):
    """In-process source over :class:`Machine` or :class:`Replay` (see module docstring)."""

    kind = "sim"

    def __init__(
        self,
        url: str,
        on_block: BlockSink,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        **options,
    ) -> None:
        super().__init__(url, on_block, on_event, clock)
        scheme, rest, query = split_url(url)
        unknown = sorted(set(query) - set(KNOWN_KEYS))
        if unknown:
            raise ConfigError(
                f"sim URL {url!r}: unknown parameter {unknown[0]!r} (known: {', '.join(KNOWN_KEYS)})"
            )
        if "channels" in query and "channels" not in options:
            options["channels"] = query["channels"]
        query.update({k: v for k, v in options.items() if k != "channels"})
        profile = rest.strip("/") or "pump"
        self.machine = machine_from_query(profile, query)
        self.lock = threading.Lock()
        self.block = _num(query, "block", 256, int)
        if not 1 <= self.block <= 65536:
            raise ConfigError(f"sim URL: block={self.block} is not in 1..65536")
        self.realtime = _flag(query, "realtime", True)
        self.speedup = _num(query, "speedup", 1.0)
        if not self.speedup > 0:
            raise ConfigError(f"sim URL: speedup={self.speedup} must be > 0")
        self.duration = parse_duration(query["duration"], "sim URL: duration") if "duration" in query else None
        self.slow = _flag(query, "slow", False)
        self.slow_rate = _num(query, "slow_rate", 10.0)
        names = self.machine.channels
        wanted = options.get("channels")
        if isinstance(wanted, str):
            wanted = tuple(c.strip() for c in wanted.split(","))
        if self.slow:
            self.channels = tuple(SLOW_CHANNELS)
            self.block = max(1, round(self.machine.rate / self.slow_rate))
            self._cols = None
        elif wanted:
            bad = [c for c in wanted if c not in names]
            if bad:
                raise ConfigError(f"sim source channels: {', '.join(bad)} not in {', '.join(names)}")
            self.channels = tuple(wanted)
            self._cols = [names.index(c) for c in wanted]
        else:
            self.channels = tuple(names)
            self._cols = None
        self._counts = {"blocks": 0, "samples": 0, "silent_blocks": 0, "outages": 0}
        self._pacer: Pacer | None = None

    def send_command(self, cmd: str, timeout_s: float = 1.0) -> float:
        """Apply ``STOP``/``RESET`` to the machine; returns the seconds it took."""
        t = time.perf_counter()
        word = cmd.strip().upper()
        with self.lock:
            if word == "STOP":
                self.machine.stop()
            elif word == "RESET":
                self.machine.reset()
            else:
                raise ConfigError(f"sim source: unknown command {cmd!r} (expected STOP or RESET)")
        return time.perf_counter() - t

    def inject(self, fault: str, severity: float = 1.0, ramp_s: float = 0.0) -> None:
        """Inject a fault into the running machine (thread-safe)."""
        with self.lock:
            self.machine.inject(fault, severity, ramp_s)

    def clear_faults(self, fault: str | None = None) -> None:
        """Heal one fault or all of them (thread-safe)."""
        with self.lock:
            self.machine.clear_faults(fault)

    def stats(self) -> dict[str, float]:
        out = dict(self._counts)
        out["late"] = self._pacer.late if self._pacer else 0
        out["machine_time_s"] = self.machine.time
        return out

    def _run(self) -> None:
        m = self.machine
        pacer = self._pacer = Pacer(m.rate, self.speedup, self.clock, self._stop)
        t_start = pacer.start
        n, seq, silent_before = 0, 0, False
        while not self._stop.is_set():
            if self.duration is not None and n / m.rate >= self.duration:
                break
            with self.lock:
                x = m.generate(self.block)
                silent = m.sensor_silent
                meta = {"slow": m.slow_values(), "status": m.status, "faults": m.active_faults()}
            if self.realtime and not pacer.wait_for(n + self.block):
                break
            t0 = t_start + n / m.rate
            n += self.block
            seq += 1
            if silent and not self.slow:
                self._counts["silent_blocks"] += 1
                if not silent_before:
                    self._counts["outages"] += 1
                    self.emit_event("outage", "sim: sensor dropout, the sensor sends nothing")
                silent_before = True
                continue
            quality = Quality.GOOD
            if silent_before:
                quality = Quality.GAP | Quality.RECOVERED
                self.emit_event("recovered", "sim: sensor sends again after a dropout")
                silent_before = False
            if self.slow:
                samples = np.array([[meta["slow"].get(k, np.nan) for k in SLOW_CHANNELS]], np.float32)
                t0, rate = t_start + n / m.rate, self.machine.rate / self.block
            else:
                samples = x if self._cols is None else np.ascontiguousarray(x[:, self._cols])
                rate = m.rate
            blk = Block(
                t0, rate, samples, self.channels, seq=seq - 1, quality=quality,
                source=self.url, t_recv=time.perf_counter(), meta=meta,
            )
            self._counts["blocks"] += 1
            self._counts["samples"] += blk.n
            self.on_block(blk)
