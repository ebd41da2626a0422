"""The fast path: block → window → features → score → decide → trip, in one thread.

Nothing here does I/O except the trip itself: recording goes through the recorder's
non-blocking queue and metrics are plain counters. Hard limits and the watchdog trip
without the model, so a missing or broken model never disarms the stop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from firmware_bridge.block import Block, Quality
from sensorml.edge.decider import Decider, Verdict
from sensorml.edge.features import FeatureExtractor, FeatureSpec
from sensorml.edge.inputs import InputGuard
from sensorml.edge.interlock import Interlock
from sensorml.edge.limits import LimitChecker
from sensorml.edge.watchdog import TripLatch, Watchdog
from sensorml.edge.windowing import SlowTracker, Windower

log = logging.getLogger("sensorml.gateway.process")


@dataclass(frozen=True, slots=True)
class ActiveModel:
    """The model the fast path scores with: replaced as a whole, never edited."""

    scorer: object  # sensorml.edge.scorer.Scorer
    decider: Decider
    version: str
    name: str


class Models(Protocol):
    """Where the fast path reads its model (:class:`sensorml.gateway.slot.ModelSlot`)."""

    #: the live model, read once per window; None: hard limits and watchdog only
    live: ActiveModel | None
    #: a candidate in shadow (``offer(features, verdict)``, O(1), never raises), or None
    shadow: object | None


class FastPath:
    """Turns blocks into verdicts and trips. Call from exactly one thread."""

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        models: Models,
        limits: LimitChecker | None,
        slow_limits: LimitChecker | None,
        watchdog: Watchdog,
        latch: TripLatch,
        actuators: Sequence,
        recorder,
        metrics,
        slow_tracker: SlowTracker | None = None,
        reset_input: str | None = None,
        on_reset: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        startup_inhibit_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
        interlock: Interlock | None = None,
        inputs: InputGuard | None = None,
    ) -> None:
        self.spec = spec
        self._names = spec.names()
        self.windower = Windower(spec)
        self.extractor = FeatureExtractor(spec)
        self.models = models
        self.limits = limits
        self.slow_limits = slow_limits
        self.watchdog = watchdog
        self.latch = latch
        self.actuators = list(actuators)
        #: trips go through it (the gateway's, with its supervisor and latch file; a bare
        #: one when the fast path runs alone)
        self.interlock = interlock or Interlock(latch, self.actuators)
        #: channel -> the breach seen in the newest samples of that channel
        self._breached: dict[str, str] = {}
        self.recorder = recorder
        self.m = metrics
        self.slow = slow_tracker
        self.reset_input = reset_input
        self.on_reset = on_reset
        self.clock = clock
        self.windows = 0
        self.last_verdict = Verdict.NORMAL
        self.model_failures = 0
        self.last_trip_latency_s: float | None = None
        # the reset input's last level; NaN until its first reading, which is a level to
        # measure the edge from, not a press (NaN compares false: no edge)
        self._reset_level = math.nan
        self._sensor_fault = False
        self.startup_inhibit_s = startup_inhibit_s
        self.monotonic = monotonic  # the start-up inhibit's clock (``clock``: event times)
        self.inhibit_until = monotonic() + startup_inhibit_s
        self.inputs = inputs  # non-finite, frozen and stale inputs (sensorml.edge.inputs)
        #: one more at every :meth:`tick` (every turn of the gateway's loop): the life
        #: signs (sensorml.gateway.lifesigns) go out only while it moves
        self.progress = 0
        self.last_progress = monotonic()

    def machine_restarted(self) -> None:
        """After a reset the machine runs up again: hold model trips for the inhibit time."""
        self.inhibit_until = self.monotonic() + self.startup_inhibit_s

    # ---------------------------------------------------------------- blocks
    def on_fast_block(self, block: Block) -> None:
        self.watchdog.feed()
        if block.quality & Quality.GAP:
            missing = int(block.meta.get("missed", 1)) if block.meta else 1
            ev = self.watchdog.note_gap(missing)
            if ev is not None:
                self._on_watchdog(ev)
        if self.limits is not None:
            breaches = self.limits.check(block.samples)
            self._note_breaches(block.channels, breaches)
            if breaches:
                self._limit_breach(breaches, block)
        if self.inputs is not None:
            events = self.inputs.fast_block(block)
            if events:
                self._input_events(events)
        for w in self.windower.push(block):
            self._window(w)

    def on_slow_block(self, block: Block) -> None:
        if self.slow is not None:
            self.slow.push(block)
        if self.slow_limits is not None:
            breaches = self.slow_limits.check(block.samples, block.channels)
            self._note_breaches(block.channels, breaches)
            if breaches:
                self._limit_breach(breaches, block)
        if self.inputs is not None:
            events = self.inputs.slow_block(block)
            if events:
                self._input_events(events)
        if self.reset_input and self.reset_input in block.channels:
            v = float(block.samples[-1, block.channels.index(self.reset_input)])
            if v >= 0.5 > self._reset_level and self.latch.tripped and self.on_reset:
                self.on_reset(f"input {self.reset_input}")
            self._reset_level = v

    def _note_breaches(self, channels, breaches) -> None:
        br = self._breached
        if br:
            for c in channels:
                br.pop(c, None)
        for b in breaches:
            br[b.channel] = f"{b.channel} = {float(b.value):g} {b.kind} limit {float(b.limit):g}"

    def active_causes(self) -> list[str]:
        """What would trip again right now: limits breached in the newest samples, a
        silent or invalid sensor. (A model's verdict starts afresh after a reset.)"""
        causes = list(self._breached.values())
        wd = self.watchdog
        if wd.silent_for() > wd.timeout_s:
            causes.append(f"no data for {wd.silent_for():.1f} s (watchdog)")
        if self._sensor_fault:
            causes.append("sensor fault: non-finite samples")
        if self.inputs is not None:
            for _ in range(3):  # read from the control thread while the fast path edits it
                try:
                    active = list(self.inputs.active)
                    break
                except RuntimeError:
                    active = []
            causes += [f"{ch}: {fault} input" for ch, fault in active]
        return causes

    def tick(self) -> None:
        """Called at every turn of the loop: counts progress, checks the watchdog."""
        self.progress += 1
        self.last_progress = self.monotonic()
        ev = self.watchdog.check()
        if ev is not None:
            self._on_watchdog(ev)
        if self.inputs is not None:
            events = self.inputs.check()
            if events:
                self._input_events(events)

    def _input_events(self, events) -> None:
        """A dead input's onset, persistence (trip or alarm per policy) or clearing."""
        now = self.monotonic()
        for ev in events:
            detail = ev.as_dict(now)
            if ev.phase == "act" and ev.action == "trip":
                self.trip("sensor", detail, t_recv=0.0)
            self.m.input_faults.labels(fault=ev.fault, phase=ev.phase).inc()
            if ev.phase == "act" and ev.action != "trip":
                self.recorder.record_event("alarm", {"cause": "sensor", **detail}, priority=0)
                log.warning("sensor fault alarm: %s %s for %.2f s", ev.channel, ev.fault,
                            detail["for_s"])
            elif ev.phase != "act":
                self.recorder.record_event("sensor", detail, priority=0)
                (log.warning if ev.phase == "onset" else log.info)(
                    "sensor fault %s: %s %s", ev.phase, ev.channel, ev.fault)

    # --------------------------------------------------------------- windows
    def _window(self, w) -> None:
        self.windows += 1
        m = self.m
        m.windows.inc()
        models = self.models
        model = models.live  # read once: this window is scored and decided by this model
        if model is None:
            return
        slow = None
        if self.slow is not None:
            if not self.slow.ready():  # slow channels not polled twice yet: nothing to score
                m.windows_unscored.inc()
                return
            slow = self.slow.window()
        x = self.extractor(w.data, slow)
        if not np.isfinite(x).all():  # NaN/inf samples or a dead slow point: a sensor fault
            self.m.sensor_faults.inc()
            if not self._sensor_fault:
                self._sensor_fault = True
                bad = [n for n, v in zip(self._names, x) if not np.isfinite(v)]
                self.recorder.record_event("alarm", {"cause": "sensor", "bad_features": bad[:20],
                                                     "window_seq": w.seq}, priority=0)
                log.warning("sensor fault: non-finite features %s", ", ".join(bad[:5]))
            return
        self._sensor_fault = False
        try:
            score = float(model.scorer.score(x))
            if not math.isfinite(score):
                raise ValueError(f"model returned {score}")
        except Exception as e:  # a broken model must never stop the loop
            self.model_failures += 1
            m.model_failures.inc()
            ev = self.watchdog.note_model_failure(e)
            if ev is not None:
                self._on_watchdog(ev)
            return
        self.watchdog.note_model_ok()
        d = model.decider.update(score)
        verdict = d.verdict
        if w.t_recv:
            m.window_latency.observe(time.perf_counter() - w.t_recv)
        m.verdicts[verdict].inc()
        m.last_score.set(score)
        t = self.clock()
        if verdict == Verdict.TRIP and self.monotonic() < self.inhibit_until:
            verdict = Verdict.ALARM  # running up after start or reset: alarm, don't trip
        if verdict == Verdict.TRIP:
            self.trip("model", {
                "score": score, "reason": d.reason, "window_seq": w.seq,
                "model_version": model.version,
            }, t_recv=w.t_recv, features=x)
        shadow = models.shadow
        if shadow is not None:  # after the live decision and trip: O(1), never raises
            shadow.offer(x, verdict)
        if verdict != self.last_verdict:
            if verdict >= Verdict.WARN and verdict != Verdict.TRIP:
                self.recorder.record_event(verdict.label, {
                    "score": score, "reason": d.reason, "window_seq": w.seq,
                    "model_version": model.version}, t=t, priority=0)
            self.last_verdict = verdict
        self.recorder.record_score(t, w.seq, score, int(verdict), model.version, x)
        if verdict >= Verdict.ALARM:
            self.recorder.record_raw(t, "around_alarm", self.spec.channels,
                                     self.spec.sample_rate, w.data)
        else:  # the recorder keeps one in buffer.raw_sample_every of these
            self.recorder.record_raw(t, "sample", self.spec.channels,
                                     self.spec.sample_rate, w.data)

    # ------------------------------------------------------------------ trip
    def _limit_breach(self, breaches, block: Block) -> None:
        detail = {"breaches": [
            {"channel": b.channel, "value": float(b.value), "limit": float(b.limit),
             "kind": b.kind} for b in breaches]}
        self.trip("limit", detail, t_recv=block.t_recv)

    def _on_watchdog(self, ev) -> None:
        """A watchdog event (silence, gap, model): trip or alarm as configured."""
        self.m.failsafe.inc()
        detail = {"watchdog": ev.cause, **ev.detail}
        if ev.action == "trip":
            self.trip(ev.cause, detail, t_recv=0.0)
        else:
            self.recorder.record_event("alarm", {"cause": ev.cause, **detail}, priority=0)
            log.warning("fail-safe alarm: %s", ev.message)

    def trip(self, cause: str, detail: dict, *, t_recv: float,
             features: np.ndarray | None = None) -> bool:
        """Latch and fire every trip actuator. Returns True if this call tripped.

        Nothing but the latch comes before the actuators: the features that explain the
        trip are added to its reason after the stop has gone out."""
        t = self.clock()
        reason = {"cause": cause, **detail}
        out = self.interlock.trip(reason, t)
        if out is None:
            return False
        results, error = out.results, out.error
        if error is not None:  # loud: logged, recorded, counted; the latch stays set
            self.m.trip_failures.inc()
            log.error("TRIP FAILED: %s", error)
        t0, t1 = out.t_start, out.t_done
        if features is not None:
            reason["features"] = dict(zip(self._names, features.tolist()))
        latency = (t1 - t_recv) if t_recv else None
        self.last_trip_latency_s = latency
        self.m.trips.inc()
        if latency is not None:
            self.m.trip_latency.observe(latency)
        event = {
            **reason,
            "actions": [{"ok": r.ok, "latency_ms": r.latency_s * 1e3, "attempts": r.attempts,
                         "detail": r.detail} for r in results],
            "action_ms": (t1 - t0) * 1e3,
            "sample_to_trip_ms": None if latency is None else latency * 1e3,
            "error": error,
        }
        self.recorder.record_event("trip", event, t=t, priority=0)
        log.warning("TRIP cause=%s latency_ms=%s", cause,
                    "n/a" if latency is None else f"{latency * 1e3:.3f}")
        return True


def features_of(spec: FeatureSpec, data: np.ndarray) -> np.ndarray:
    """Features of one window with the edge's own function (used by ``learn``)."""
    return FeatureExtractor(spec)(data, None)
