"""What every actuator shares: the retry loop, the timing, the loud failure.

A subclass implements :meth:`Actuator._attempt` (one try of ``trip`` or ``reset``; it
returns a short detail or raises) and :meth:`Actuator._recover` (drop and reopen the
connection after a failed try). The base class times the whole action with
``perf_counter`` (verification included), counts attempts, pauses briefly between them,
and after the last one logs at ERROR and raises :class:`TripError` naming the
actuator and every attempt's failure. The error carries the failed
:class:`ActionResult` as ``.result``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from firmware_bridge.actuators.spec import ActuatorSpec
from firmware_bridge.errors import BridgeError, TripError

log = logging.getLogger("firmware_bridge.actuators")

#: Modbus exception codes, for messages a plant engineer can act on
MODBUS_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target did not respond",
}


@dataclass(frozen=True, slots=True)
class ActionResult:
    """The outcome of one ``trip()`` or ``reset()``: ``latency_s`` covers every attempt,
    pauses and verification; ``detail`` says what was done (or every failure)."""

    ok: bool
    latency_s: float
    attempts: int
    detail: str
    actuator: str = ""


def describe(exc: BaseException) -> str:
    """One line for an attempt's failure (our own errors without their class name)."""
    if isinstance(exc, BridgeError):
        return str(exc)
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Actuator:
    """Base of every actuator. Thread-safe: one action at a time per actuator."""

    kind = "actuator"

    def __init__(self, spec: ActuatorSpec) -> None:
        self.spec = spec
        self.name = spec.label
        self._lock = threading.Lock()
        self._closed = False
        self.last_result: ActionResult | None = None
        self.trips = 0
        self.failures = 0

    # ------------------------------------------------------------------ public
    def trip(self, reason: str = "") -> ActionResult:
        """Stop the machine. Raises :class:`TripError` once every attempt failed."""
        return self._act("trip", reason)

    def reset(self) -> ActionResult:
        """Release the stop. Raises :class:`TripError` once every attempt failed."""
        return self._act("reset", "")

    def check(self) -> bool | None:
        """While latched: does the device still hold the stop? True or False when it can
        be read back, None when this kind cannot tell; raises when the device does not
        answer. One attempt, no retries (the supervisor asks again next period)."""
        with self._lock:
            if self._closed:
                return None
            return self._check()

    def close(self) -> None:
        """Release the connection. Idempotent."""
        self._closed = True
        with self._lock:
            self._close()

    def target(self) -> str:
        """Where this actuator acts, for messages (``coil 0 on modbus-tcp://...``)."""
        return self.spec.url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.target()}>"

    # ------------------------------------------------------------- subclasses
    def _attempt(self, action: str, reason: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self) -> bool | None:
        """One read-back of the stop (called with the lock held); see :meth:`check`."""
        return None

    def _recover(self) -> None:
        """Called after a failed attempt: drop the connection so the next one starts clean."""

    def _close(self) -> None:
        """Release resources (called with the lock held)."""

    # ------------------------------------------------------------------- core
    def _act(self, action: str, reason: str) -> ActionResult:
        spec = self.spec
        total = spec.retries + 1
        failures: list[str] = []
        with self._lock:
            t0 = time.perf_counter()
            if self._closed:
                failures.append("actuator is closed")
                total = 0
            for attempt in range(1, total + 1):
                try:
                    detail = self._attempt(action, reason)
                except Exception as e:  # noqa: BLE001 - every failure is reported, never lost
                    failures.append(f"attempt {attempt}: {describe(e)}")
                    log.warning("%s %s attempt %d/%d failed: %s",
                                action, self.name, attempt, total, describe(e))
                    try:
                        self._recover()
                    except Exception as e2:  # noqa: BLE001
                        log.warning("%s: recovering after a failed attempt: %s", self.name, describe(e2))
                    if attempt < total and spec.retry_pause_s > 0:
                        time.sleep(spec.retry_pause_s)  # a short pause before retrying the device
                    continue
                result = ActionResult(True, time.perf_counter() - t0, attempt, detail, self.name)
                self.last_result = result
                if action == "trip":
                    self.trips += 1
                log.info("%s %s ok in %.3f ms (%d attempt%s): %s%s",
                        action, self.name, result.latency_s * 1e3, attempt,
                        "" if attempt == 1 else "s", detail,
                        f" reason={reason}" if reason else "")
                return result
            latency = time.perf_counter() - t0
        self.failures += 1
        detail = "; ".join(failures)
        result = ActionResult(False, latency, max(total, 0), detail, self.name)
        self.last_result = result
        msg = (f"{action} of actuator {self.name} ({self.kind} {self.target()}) FAILED "
               f"after {result.attempts} attempt{'' if result.attempts == 1 else 's'} "
               f"in {latency * 1e3:.1f} ms: {detail}")
        log.error("%s", msg)
        err = TripError(msg)
        err.result = result  # type: ignore[attr-defined]
        raise err
