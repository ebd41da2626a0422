"""The gateway process: sources → bounded queue → fast path → trip; recorder; control.

``run_gateway(cfg)`` blocks until SIGTERM/SIGINT (or ``Gateway.stop()``). Threads:

- one reader thread per source (owned by the source), putting blocks on a bounded queue;
- the fast-path thread (the caller of :meth:`Gateway.run`), which is the only one that
  windows, scores, decides and trips;
- the recorder's writer thread (SQLite), the control server's two threads (a selector loop
  for every connection, and one that runs commands: :mod:`sensorml.gateway.control`), the model
  slot's watch thread (:class:`sensorml.gateway.slot.ModelSlot`: loads and checks a new
  bundle off the fast path, then swaps it in; runs a candidate in shadow).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sqlite3
import sys
import threading
import time

from firmware_bridge.sources import open_source
from sensorml.buffer.recorder import Recorder
from sensorml.bundles.staging import BundleStore, deployment_state
from sensorml.config import GatewayConfig
from sensorml.edge.fastpath import FastPath
from sensorml.edge.interlock import Interlock, LatchFile, LatchFileError
from sensorml.edge.limits import HardLimit, LimitChecker
from sensorml.edge.watchdog import TripLatch, Watchdog
from sensorml.edge.windowing import SlowTracker
from sensorml.errors import SensormlError, StoreError
from sensorml.gateway.slot import ModelSlot
from sensorml.gateway.telemetry import GatewayMetrics

log = logging.getLogger("sensorml.gateway.process")

_FAST, _SLOW, _EVENT = 0, 1, 2


class Gateway:
    """Everything one gateway runs, wired from a checked config. It holds a model slot
    (:attr:`slot`: the live model and a candidate in shadow) that the fast path reads."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.spec = cfg.feature_spec()
        self.q: queue.Queue = queue.Queue(maxsize=4096)
        self._stop = threading.Event()
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        cfg.buffer.path.parent.mkdir(parents=True, exist_ok=True)
        self.recorder = Recorder(cfg.buffer.path, queue_size=cfg.buffer.queue_size,
                                 max_bytes=int(cfg.buffer.max_mb * 1024 * 1024),
                                 raw_sample_every=cfg.buffer.raw_sample_every,
                                 device=cfg.device_id, start=False)
        self.metrics = GatewayMetrics(self.recorder)
        self.latch = TripLatch()
        wd = cfg.watchdog
        self.watchdog = Watchdog(wd.timeout_s, max_gap=wd.max_gap,
                                 model_failures=wd.model_failures, on_silence=wd.on_silence,
                                 on_gap=wd.on_gap, on_model_failure=wd.on_model_failure)
        self.sources = []
        self.serial_link = None
        self.actuators = []
        self.fast: FastPath | None = None
        self.interlock: Interlock | None = None
        self.control = None
        self.life = None  # sensorml.gateway.lifesigns.LifeSigns, from run()
        self.started, self._started_mono = time.time(), time.monotonic()  # stamp; uptime
        self.slot = ModelSlot(cfg.model, cfg.decision, cfg.deploy, self.spec,
                              BundleStore(cfg.state_dir / "bundles"),
                              record_event=self._record_event,
                              on_refused=self.metrics.model_refusals.inc)

    # --------------------------------------------------------------- set-up
    def _put(self, kind: int, item) -> None:
        try:
            self.q.put_nowait((kind, item))
        except queue.Full:
            self.metrics.queue_drops.inc()

    def open(self) -> None:
        """Start safe: the trip outputs and the latch first, and a pending stop re-sent
        before anything that can fail (the buffer, the model, the control port)."""
        cfg = self.cfg
        src = open_source(cfg.source.url, lambda b: self._put(_FAST, b),
                          lambda e: self._put(_EVENT, e), **self._source_options(cfg.source))
        self.sources.append(src)
        if cfg.source.url.startswith("serial:"):
            self.serial_link = src
        for s in cfg.slow_sources:
            self.sources.append(open_source(s.url, lambda b: self._put(_SLOW, b),
                                            lambda e: self._put(_EVENT, e),
                                            **self._source_options(s)))
        self._open_actuators()
        latch = cfg.latch
        self.interlock = Interlock(
            self.latch, self.actuators,
            latch_file=LatchFile(latch.path) if latch is not None else None,
            record_event=self._record_event, on_reassert=self.metrics.trip_reasserts.inc,
            verify_every_s=latch.verify_every_s if latch is not None else 0.5,
            min_reset_interval_s=cfg.reset_min_interval_s)
        self._restore_latch_file()
        if self.latch.tripped:
            self.interlock.reassert("restart while latched")
        self._check_buffer()
        if not self.latch.tripped:
            self._restore_latch()
            if self.latch.tripped:
                self.interlock.reassert("restart while latched (from the buffer)")
        self.slot.load()

    def _open_actuators(self) -> None:
        from firmware_bridge.actuators import open_actuator
        from firmware_bridge.errors import PortError

        for spec in self.cfg.trip:
            link = self.serial_link if spec.kind == "serial-command" else None
            try:
                self.actuators.append(open_actuator(spec, serial_link=link))
            except PortError as e:
                # Start anyway (hard limits and the watchdog must run), connect at trip time,
                # and say so loudly: a trip path that is down now is an operator's problem.
                log.error("trip actuator not reachable at start: %s", e)
                self._record_event("actuator", {"error": str(e)})
                self.actuators.append(open_actuator(spec, serial_link=link, connect=False))

    def _restore_latch_file(self) -> None:
        """The durable latch: tripped in the file → latched now. A file that cannot be
        trusted fails safe: latched, until a person has looked and reset."""
        lf = self.interlock.latch_file
        if lf is None:
            return
        try:
            state = lf.read()
        except LatchFileError as e:
            log.error("%s: starting latched (fail safe) until a reset", e)
            self.latch.trip({"cause": "latch file unreadable", "error": str(e),
                             "restored": True}, time.time())
            return
        if not state or not state.get("tripped"):
            return
        reason = state.get("reason")
        reason = dict(reason) if isinstance(reason, dict) else {"cause": str(reason)}
        reason.update(restored=True)
        t = state.get("tripped_at")
        self.latch.trip(reason, float(t) if isinstance(t, int | float) else time.time())
        log.warning("latched trip restored from %s (cause %s): the machine stays stopped "
                    "until a reset", lf.path, reason.get("cause"))

    def _check_buffer(self) -> None:
        """A damaged buffer is moved aside (kept for inspection) and a new one started:
        the gateway guards the machine either way, and says so in the new buffer."""
        from sensorml.buffer.db import integrity_problem, move_aside

        path = self.cfg.buffer.path
        problem = integrity_problem(path)
        if problem is None:
            return
        try:
            moved = move_aside(path, time.strftime("%Y%m%dT%H%M%S"))
        except OSError as e:
            log.error("buffer %s is damaged (%s) and cannot be moved aside (%s)",
                      path, problem, e.strerror)
            return
        log.error("buffer %s is damaged (%s): moved to %s, starting a new one",
                  path, problem, moved.name)
        self._record_event("buffer", {"error": "damaged buffer moved aside", "problem": problem,
                                      "moved_to": str(moved)})

    def _restore_latch(self) -> None:
        """A trip survives a restart: if the buffer's newest trip event has no reset after
        it (the gateway crashed, was killed or rebooted while tripped), start latched with
        that reason; :meth:`run` re-sends the stop. Only an operator's reset clears it."""
        from sensorml.buffer.db import Buffer

        path = self.cfg.buffer.path
        if not path.exists():
            return
        try:
            with Buffer(path, readonly=True) as b:
                pending = b.pending_trip()
        except (StoreError, sqlite3.Error) as e:
            log.error("cannot read the last trip from %s (%s): starting unlatched", path, e)
            return
        if pending is None:
            return
        d = pending.detail
        reason = {k: v for k, v in d.items()
                  if k not in ("actions", "features", "action_ms", "sample_to_trip_ms", "error")}
        reason.update(restored=True, tripped_at=pending.t, event_id=pending.id)
        self.latch.trip(reason, float(pending.t))
        log.warning("latched trip restored from the buffer (event %d, cause %s): the machine stays "
                    "stopped until a reset", pending.id, d.get("cause"))

    @staticmethod
    def _source_options(s) -> dict:
        opts = dict(s.options)
        if s.channels:
            opts["channels"] = tuple(s.channels)
        if s.rate is not None and not s.url.startswith("modbus"):
            opts["rate"] = s.rate
        return opts

    def _record_event(self, kind: str, detail: dict) -> None:
        self.recorder.record_event(kind, {"device": self.cfg.device_id, **detail}, priority=0)

    def _build_fastpath(self) -> FastPath:
        cfg = self.cfg
        fast_ch = tuple(self.spec.channels)
        fast_limits = [HardLimit(lim.channel, lim.above, lim.below)
                       for lim in cfg.limits if lim.channel in fast_ch]
        slow_ch = tuple(c for s in self.sources[1:] for c in s.channels)
        slow_limits = [HardLimit(lim.channel, lim.above, lim.below)
                       for lim in cfg.limits if lim.channel not in fast_ch]
        for lim in slow_limits:
            if lim.channel not in slow_ch:
                raise SensormlError(
                    f"limits: channel {lim.channel!r} is not produced by any source "
                    f"(fast: {', '.join(fast_ch)}; slow: {', '.join(slow_ch) or 'none'})")
        slow_tracker = SlowTracker(self.spec) if self.spec.slow_channels else None
        return FastPath(
            self.spec, models=self.slot, inputs=self._input_guard(fast_ch),
            limits=LimitChecker(fast_limits, fast_ch) if fast_limits else None,
            slow_limits=LimitChecker(slow_limits) if slow_limits else None,
            watchdog=self.watchdog, latch=self.latch, actuators=self.actuators,
            recorder=self.recorder, metrics=self.metrics,
            slow_tracker=slow_tracker, startup_inhibit_s=cfg.decision.startup_inhibit_s,
            reset_input=cfg.reset_input, on_reset=self.reset, interlock=self.interlock,
        )

    def _input_guard(self, fast_ch: tuple[str, ...]):
        """Non-finite and frozen fast channels (streaming sources: a polled Modbus point
        may sit constant), stale slow points where ``stale_after`` is set."""
        from sensorml.edge.inputs import InputGuard

        cfg, wd = self.cfg, self.cfg.watchdog
        stale: dict[str, float] = {}
        for i, (sc, src) in enumerate(zip(cfg.slow_sources, self.sources[1:])):
            for ch, s in sc.stale_after.items():
                if ch != "*" and ch not in src.channels:
                    raise SensormlError(f"slow_sources[{i}].stale_after.{ch}: not a channel of "
                                        f"this source ({', '.join(src.channels)})")
                for c in (src.channels if ch == "*" else (ch,)):
                    stale[c] = s
        streaming = not cfg.source.url.startswith("modbus")
        return InputGuard(fast_ch if streaming else (), frozen_after_s=wd.frozen_after_s,
                          persist_s=wd.sensor_fault_for_s, action=wd.on_sensor_fault,
                          stale_after=stale)

    # ------------------------------------------------------------- control
    def reset(self, by: str, *, force: bool = False, note: str = "") -> dict:
        """Clear the latch and run every actuator's reset (any thread); refused while the
        trip's cause is present unless ``force``, and rate limited (``reset.min_interval``).
        Returns ``{"ok", "detail", "refused"}``."""
        fast = self.fast

        def cleared() -> None:
            model = self.slot.live
            if model is not None:
                model.decider.reset()  # don't re-trip on the windows that caused the trip
            if fast is not None:
                fast.machine_restarted()

        out = self.interlock.reset(by, force=force, note=note,
                                   present=fast.active_causes if fast is not None else None,
                                   on_cleared=cleared)
        if out.get("refused"):
            self.metrics.reset_refusals.inc()
        return out

    def status(self) -> dict:
        slot = self.slot.status()
        return {
            "device_id": self.cfg.device_id, "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started_mono, 1),
            "tripped": self.latch.tripped, "trip_reason": self.latch.reason,
            "interlock": self.interlock.snapshot(),
            "control": self.control is not None,
            "model": slot["model"], "model_error": slot["model_error"],
            "last_trip_latency_ms": None if self.fast.last_trip_latency_s is None
            else round(self.fast.last_trip_latency_s * 1e3, 3),
            "windows": self.fast.windows, "queue_depth": self.q.qsize(),
            "fast_path": {"progress": self.fast.progress,
                          "idle_s": round(time.monotonic() - self.fast.last_progress, 3)},
            "life_signs": self.life.status() if self.life is not None else {},
            "sources": {s.url: s.stats() for s in self.sources},
            "recorder": self.recorder.stats(),
            "metrics": self.metrics.summary(),
            "deployment": {**deployment_state(self.cfg.state_dir),
                           "shadow": slot["shadow"], "last_shadow": slot["last_shadow"]},
        }

    # ----------------------------------------------------------------- run
    def run(self) -> None:
        from sensorml.gateway.routes import open_control

        self.fast = self._build_fastpath()
        self.interlock.start()
        self.recorder.start()
        try:
            self.control = open_control(self)
            self.control.start()
        except (SensormlError, RuntimeError) as e:
            # protection does not need the control port: run on, and say so
            self.control = None
            log.error("%s: running WITHOUT the control port (the machine is guarded; "
                      "status and reset are unavailable until a restart)", e)
            self._record_event("control", {"error": str(e)})
        if self.control is not None:
            (self.cfg.state_dir / "gateway.json").write_text(json.dumps({
                "pid": os.getpid(), "host": self.cfg.metrics.host, "port": self.control.port,
                "device_id": self.cfg.device_id, "started": self.started}))
        for s in self.sources:
            s.start()
        self.slot.start()
        restored = self.latch.reason if self.latch.tripped else None
        from sensorml.gateway.lifesigns import LifeSigns

        fast = self.fast
        self.life = LifeSigns(self.cfg.heartbeat, lambda: fast.progress,
                              serial_link=self.serial_link, metrics=self.metrics
                              ).start(status="armed")
        live = self.slot.live
        self._record_event("start", {"model": live.version if live else None,
                                     "tripped": restored})
        if self.control is not None:
            log.info("gateway %s running: control on %s:%d", self.cfg.device_id,
                     self.cfg.metrics.host, self.control.port)
            print(f"gateway {self.cfg.device_id} running; metrics http://"
                  f"{self.cfg.metrics.host}:{self.control.port}/metrics", flush=True)
        else:
            print(f"gateway {self.cfg.device_id} running without a control port", flush=True)
        tick = min(0.05, self.watchdog.timeout_s / 4)
        wd = self.watchdog
        fast, get = self.fast, self.q.get
        try:
            while not self._stop.is_set():
                try:
                    # wake when the watchdog's silence deadline passes, not a tick later
                    left = wd.timeout_s - wd.silent_for()
                    kind, item = get(timeout=min(tick, left + 0.0005) if left > 0 else tick)
                except queue.Empty:
                    fast.tick()
                    continue
                if kind == _FAST:
                    fast.on_fast_block(item)
                elif kind == _SLOW:
                    fast.on_slow_block(item)
                else:
                    self._source_event(item)
                fast.tick()
        finally:
            self.close()

    def _source_event(self, ev) -> None:
        self.metrics.source_events.inc()
        self._record_event("source", {"kind": ev.kind, "source": ev.source,
                                      "message": ev.message})
        (log.warning if ev.kind in ("outage", "error") else log.info)(
            "source %s: %s %s", ev.source, ev.kind, ev.message)

    def request_reload(self) -> None:
        self.slot.request_reload()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self.life is not None:
            self.life.close()
        if self.interlock is not None:
            self.interlock.close()
        self.slot.close()
        for s in self.sources:
            try:
                s.stop()
            except Exception:  # noqa: BLE001
                log.exception("stopping source")
        self._record_event("stop", {"windows": getattr(self.fast, "windows", 0)})
        self.recorder.close()
        if self.control:
            self.control.stop()
        for a in self.actuators:
            try:
                a.close()
            except Exception:  # noqa: BLE001
                pass
        try:
            (self.cfg.state_dir / "gateway.json").unlink()
        except FileNotFoundError:
            pass


def run_gateway(cfg: GatewayConfig) -> int:
    # The fast path shares the GIL with the reader, recorder and control threads; a 1 ms
    # switch interval (CPython's default is 5 ms) bounds how long a window can wait for it.
    sys.setswitchinterval(0.001)
    gw = Gateway(cfg)
    gw.open()
    signal.signal(signal.SIGTERM, lambda *_: gw.stop())
    signal.signal(signal.SIGINT, lambda *_: gw.stop())
    signal.signal(signal.SIGHUP, lambda *_: gw.request_reload())
    gw.run()
    return 0
