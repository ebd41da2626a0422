"""The one owner of the trip latch and the trip outputs.

Everything that changes the stop goes through an :class:`Interlock`: the fast path's
trip, an operator's reset, the re-assertion of a stop a device has lost. The rules:

- **Trip and reset are ordered.** A reset clears the latch under the interlock's lock,
  sends the resets, then looks again: a trip that latched meanwhile (the cause never
  went away) fires its stop once more, after every reset has gone out, so the last
  word each device hears is STOP. Resets run one at a time; a trip never waits for one.
- **A reset is refused while the trip's cause is present** (a limit still breached, the
  sensor still silent or invalid: ``present()``), unless forced, and at most one reset
  per ``min_reset_interval_s`` goes out: a reset is a person's decision, not a retry loop.
- **The stop is maintained.** While latched, a supervisor thread reads each actuator
  back every ``verify_every_s`` (``Actuator.check``: the coil or register on a Modbus
  device, the link's reconnects on a serial one) and fires its stop again when the
  device lost it (a PLC that rebooted, a target that was down at the trip), with a
  ``reassert`` event each time.
- **The latch is durable.** With a :class:`LatchFile`, the trip is written and fsynced
  beside the buffer right after the first actuator acted, and the reset before any reset
  goes out; a gateway that restarts after a crash or a power cut reads it back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.actuators import ActionResult, ActuatorGroup
from firmware_bridge.errors import TripError
from sensorml.edge.watchdog import TripLatch

log = logging.getLogger("sensorml.gateway.process")

__all__ = ["Interlock", "LatchFile", "LatchFileError", "TripOutcome"]


class LatchFileError(Exception):
    """The latch file exists but cannot be trusted (truncated, edited, flipped bits)."""


class LatchFile:
    """``latch.json``: the latched state, written atomically and durably.

    Each write goes to a temporary file that is fsynced, renamed over the old one, and
    the directory fsynced, so after a power cut the file is the old state or the new one,
    never a torn mix. The body carries its own SHA-256: a file that does not match is
    :class:`LatchFileError` (the caller then fails safe: latched).
    """

    VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.writes = 0
        self.failures = 0

    def write(self, state: dict) -> None:
        body = {"version": self.VERSION, **state}
        text = json.dumps(body, sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()
        data = json.dumps({"state": body, "sha256": digest}, sort_keys=True,
                          default=str).encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.writes += 1

    def read(self) -> dict | None:
        """The state last written, None if there is no file; LatchFileError if corrupt."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise LatchFileError(f"{self.path}: cannot read ({e.strerror})") from None
        try:
            doc = json.loads(raw)
            body, digest = doc["state"], doc["sha256"]
            text = json.dumps(body, sort_keys=True, default=str)
        except (ValueError, KeyError, TypeError):
            raise LatchFileError(f"{self.path}: not a latch file (truncated or edited)") from None
        if hashlib.sha256(text.encode()).hexdigest() != digest:
            raise LatchFileError(f"{self.path}: checksum mismatch (the file was damaged)")
        if not isinstance(body, dict) or body.get("version") != self.VERSION:
            raise LatchFileError(f"{self.path}: unknown latch file version")
        return body


@dataclass
class TripOutcome:
    """What one trip did: each actuator's result, the failure if any, the timing."""

    results: list[ActionResult] = field(default_factory=list)
    error: str | None = None
    #: perf_counter when the actuators started, and when the slowest one was done (the
    #: latch file's fsync, which overlaps them, is not in it)
    t_start: float = 0.0
    t_done: float = 0.0


class Interlock:
    """Latch + actuators behind one lock; see the module docstring."""

    def __init__(self, latch: TripLatch, actuators: Sequence, *,
                 latch_file: LatchFile | None = None,
                 record_event: Callable[[str, dict], None] | None = None,
                 on_reassert: Callable[[], None] | None = None,
                 verify_every_s: float = 0.5, min_reset_interval_s: float = 0.0,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.latch = latch
        self.actuators = list(actuators)
        self.group = ActuatorGroup(self.actuators)
        self.latch_file = latch_file
        self.record_event = record_event or (lambda kind, detail: None)
        self.on_reassert = on_reassert or (lambda: None)
        self.verify_every_s = float(verify_every_s)
        self.min_reset_interval_s = float(min_reset_interval_s)
        self.clock, self.monotonic = clock, monotonic
        self._lock = threading.Lock()  # the latch's transitions (short, never around I/O)
        self._reset_lock = threading.Lock()  # one reset or re-assertion at a time
        self._last_reset: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: per actuator: True once its device is known to hold the stop of this trip
        self._held: list[bool] = [False] * len(self.actuators)
        self._down: list[bool] = [False] * len(self.actuators)
        self.reasserts = 0
        self.refused_resets = 0
        self.latch_write_failures = 0

    # -------------------------------------------------------------- life
    def start(self) -> None:
        """Start the actuators' workers and the stop's supervisor (both optional for a
        trip: without them the trip runs every actuator in the fast path's thread)."""
        self.group.start()
        if self.actuators and self.verify_every_s > 0:
            t = threading.Thread(target=self._supervise, name="interlock", daemon=True)
            try:
                t.start()
            except RuntimeError as e:
                log.error("the stop's supervisor cannot start (%s): a stop a device loses "
                          "while latched will not be re-sent", e)
                return
            self._thread = t

    def close(self) -> None:
        self._stop.set()
        with self.latch._cond:
            self.latch._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)
        self.group.close()

    # -------------------------------------------------------------- trip
    def trip(self, reason: dict, t: float) -> TripOutcome | None:
        """Latch with ``reason`` and fire every actuator. None if already latched.

        The first actuator acts in this thread before anything that could fail for lack
        of resources; the latch file is written while the others act. Never raises."""
        with self._lock:
            if not self.latch.trip(reason, t):
                return None
            self._held = [False] * len(self.actuators)
        return self._fire_trip(str(reason.get("cause", "trip")), reason, t)

    def _fire_trip(self, cause: str, reason: dict, t: float) -> TripOutcome:
        out = TripOutcome(t_start=time.perf_counter())

        def durable() -> None:
            self._write_latch({"tripped": True, "reason": reason, "tripped_at": t})

        try:
            out.results = self.group.fire("trip", cause, after_first=durable)
        except TripError as e:
            out.error = str(e)
            out.results = [r for r in getattr(e, "results", []) if r is not None]
        except Exception as e:  # noqa: BLE001 - a bug here must not unlatch or kill the loop
            out.error = f"{type(e).__name__}: {e}"
            log.exception("trip path")
        out.t_done = out.t_start + max((r.latency_s for r in out.results), default=0.0)
        self._held = [bool(r.ok) for r in out.results] + \
            [False] * (len(self.actuators) - len(out.results))
        return out

    def _write_latch(self, state: dict) -> None:
        if self.latch_file is None:
            return
        try:
            self.latch_file.write(state)
        except OSError as e:  # full disk, read-only fs: the latch holds in memory
            self.latch_write_failures += 1
            log.error("latch file %s not written (%s): a restart would not know of this "
                      "state", self.latch_file.path, e.strerror or e)

    # ------------------------------------------------------------- reset
    def reset(self, by: str, *, force: bool = False, note: str = "",
              present: Callable[[], list[str]] | None = None,
              on_cleared: Callable[[], None] | None = None) -> dict:
        """Clear the latch and send every actuator's reset; see the module docstring.

        ``present()`` names the causes still present (refused unless ``force``);
        ``on_cleared`` runs right after the latch is cleared, before any reset goes out
        (the fast path forgets the windows that caused the trip). Returns
        ``{"ok", "detail", "refused"}``."""
        with self._reset_lock:
            if not self.latch.tripped:
                return {"ok": True, "detail": "not tripped", "refused": False}
            now = self.monotonic()
            if self._last_reset is not None and self.min_reset_interval_s > 0 \
                    and now - self._last_reset < self.min_reset_interval_s:
                return self._refuse(by, note, (
                    f"reset refused: the last reset was {now - self._last_reset:.1f} s ago; "
                    f"at most one per {self.min_reset_interval_s:g} s (reset.min_interval)"))
            causes = present() if present is not None else []
            if causes and not force:
                return self._refuse(by, note, (
                    "reset refused: the trip's cause is still present (" + "; ".join(causes)
                    + "); clear it first, or force the reset (sensorml reset --force)"))
            with self._lock:
                reason = self.latch.reason
                self.latch.reset()
            self._last_reset = now
            self._write_latch({"tripped": False, "reset_by": by, "reset_at": self.clock()})
            if on_cleared is not None:
                on_cleared()
            errors = []
            try:
                self.group.fire("reset")
            except TripError as e:
                errors.append(str(e))
            except Exception as e:  # noqa: BLE001
                errors.append(f"{type(e).__name__}: {e}")
                log.exception("reset path")
            self.record_event("reset", {"by": by, "note": note, "forced": bool(force and causes),
                                        "present": causes, "errors": errors,
                                        "cause": reason.get("cause") if isinstance(reason, dict)
                                        else reason})
            log.warning("RESET by %s%s%s", by, f" ({note})" if note else "",
                        f" errors: {errors}" if errors else "")
            retripped = self.latch.tripped
            if retripped:
                # A trip latched while the resets went out: its stop may have reached a
                # device before our reset did. Send it again, after every reset.
                self._reassert_all("a trip latched during the reset")
            detail = "; ".join(errors) or ("reset; tripped again at once: the cause came back"
                                           if retripped else "reset")
            return {"ok": not errors, "detail": detail, "refused": False}

    def _refuse(self, by: str, note: str, why: str) -> dict:
        self.refused_resets += 1
        self.record_event("reset_refused", {"by": by, "note": note, "why": why})
        log.warning("RESET by %s refused: %s", by, why)
        return {"ok": False, "detail": why, "refused": True}

    # ---------------------------------------------------------- maintain
    def reassert(self, why: str) -> TripOutcome | None:
        """Send the stop of the current trip again (after a restart while latched)."""
        with self._reset_lock:
            return self._reassert_all(why)

    def _reassert_all(self, why: str) -> TripOutcome | None:
        reason = self.latch.reason
        if reason is None:
            return None
        cause = reason.get("cause", "trip") if isinstance(reason, dict) else str(reason)
        out = TripOutcome(t_start=time.perf_counter())
        try:
            out.results = self.group.fire("trip", str(cause))
        except TripError as e:
            out.error = str(e)
            out.results = [r for r in getattr(e, "results", []) if r is not None]
        out.t_done = time.perf_counter()
        self._held = [bool(r.ok) for r in out.results] + \
            [False] * (len(self.actuators) - len(out.results))
        self.reasserts += 1
        self.on_reassert()
        self.record_event("reassert", {"why": why, "cause": cause, "error": out.error,
                                       "actuators": [r.actuator for r in out.results]})
        (log.error if out.error else log.warning)(
            "STOP re-sent (%s)%s", why, f": {out.error}" if out.error else "")
        return out

    def _supervise(self) -> None:
        while not self._stop.is_set():
            if not self.latch.wait(True, timeout=1.0):
                continue
            if self._stop.wait(self.verify_every_s):
                return
            with self._reset_lock:
                if self.latch.tripped:
                    self._verify_once()

    def _verify_once(self) -> None:
        """Read every actuator back; fire the stop again on each that lost it."""
        from firmware_bridge.actuators.group import run_action

        reason = self.latch.reason
        cause = reason.get("cause", "trip") if isinstance(reason, dict) else str(reason)
        for i, a in enumerate(self.actuators):
            try:
                held = a.check()
            except Exception as e:  # noqa: BLE001 - the device does not answer
                if not self._down[i]:
                    self._down[i] = True
                    log.error("trip actuator %s does not answer while latched (%s): its stop "
                              "is re-sent when it is back", a.name, e)
                self._held[i] = False
                continue
            was_down = self._down[i]
            if held is None:  # cannot be read back: re-sent only if it failed at the trip
                held = self._held[i]
            if held:
                self._held[i], self._down[i] = True, False
                continue
            why = "back after an outage" if was_down else \
                "read back without the stop" if self._held[i] else "its stop had failed"
            res, err = run_action(a, "trip", str(cause))
            self._held[i] = res.ok
            if res.ok:
                self._down[i] = False
                self.reasserts += 1
                self.on_reassert()
                self.record_event("reassert", {"actuator": a.name, "why": why, "cause": cause,
                                               "ok": True})
                log.warning("STOP re-asserted on %s (%s)", a.name, why)
            elif not was_down:  # once per outage, not every period
                self._down[i] = True
                self.record_event("reassert", {"actuator": a.name, "why": why, "cause": cause,
                                               "ok": False, "error": err})
                log.error("STOP could not be re-asserted on %s (%s): %s", a.name, why, err)

    def snapshot(self) -> dict:
        return {"reasserts": self.reasserts, "refused_resets": self.refused_resets,
                "latch_write_failures": self.latch_write_failures,
                "actuators_holding": list(self._held) if self.latch.tripped else [],
                "actuators_down": [a.name for a, d in zip(self.actuators, self._down) if d]}
