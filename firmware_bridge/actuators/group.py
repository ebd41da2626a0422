"""Fire several actuators at once without creating a thread at trip time.

:func:`firmware_bridge.actuators.trip_all` starts a thread per extra actuator on each
call; a process at its task limit (``TasksMax``, ``RLIMIT_NPROC``) then fails with
``RuntimeError: can't start new thread`` exactly when the machine must stop. An
:class:`ActuatorGroup` starts one worker per extra actuator once, at start-up. At the
trip the calling thread hands each worker its job (a queue put, which cannot fail for
lack of resources), runs the first actuator itself, then collects the others. A worker
that could not be started, or has died, is replaced by running its actuator in the
calling thread after the first: slower, never lost.

>>> from firmware_bridge.actuators.base import ActionResult
>>> class Relay:
...     name = "relay"
...     def trip(self, reason): return ActionResult(True, 0.0, 1, f"open ({reason})")
...     def reset(self): return ActionResult(True, 0.0, 1, "closed")
>>> g = ActuatorGroup([Relay(), Relay()]).start()
>>> [r.detail for r in g.fire("trip", "bearing")]
['open (bearing)', 'open (bearing)']
>>> g.close()
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence

from firmware_bridge.actuators.base import ActionResult, Actuator, describe, log
from firmware_bridge.errors import TripError

__all__ = ["ActuatorGroup", "run_action"]


def run_action(a: Actuator, action: str, reason: str) -> tuple[ActionResult, str | None]:
    """One actuator's ``trip``/``reset``: its result, and its error text if it failed.
    Never raises (a bug in an actuator is a failed action, reported like any other)."""
    t0 = time.perf_counter()
    try:
        return (a.trip(reason) if action == "trip" else a.reset()), None
    except Exception as e:  # noqa: BLE001 - collected and reported by the caller
        res = getattr(e, "result", None)
        if not isinstance(res, ActionResult):
            res = ActionResult(False, time.perf_counter() - t0, 0, describe(e),
                               getattr(a, "name", repr(a)))
        return res, describe(e)


class _Job:
    __slots__ = ("action", "reason", "result", "error", "done")

    def __init__(self, action: str, reason: str) -> None:
        self.action, self.reason = action, reason
        self.result: ActionResult | None = None
        self.error: str | None = None
        self.done = threading.Event()


class ActuatorGroup:
    """Every trip actuator of a gateway, fired together by :meth:`fire`."""

    def __init__(self, actuators: Sequence[Actuator]) -> None:
        self.actuators = list(actuators)
        self._queues: list[queue.SimpleQueue | None] = [None] * len(self.actuators)
        self._threads: list[threading.Thread | None] = [None] * len(self.actuators)
        #: times a worker was missing at a trip and its actuator ran in the caller instead
        self.inline_fallbacks = 0

    def start(self) -> ActuatorGroup:
        """Start a worker for each actuator after the first (the first runs in the
        caller). A worker that cannot be started is logged; :meth:`fire` then runs that
        actuator in the caller."""
        for i in range(1, len(self.actuators)):
            if self._threads[i] is not None and self._threads[i].is_alive():
                continue
            q: queue.SimpleQueue = queue.SimpleQueue()
            t = threading.Thread(target=self._work, args=(i, q), daemon=True,
                                 name=f"actuator-{i}")
            try:
                t.start()
            except RuntimeError as e:  # out of threads: the trip will run it in the caller
                log.error("actuator %s: cannot start its worker thread (%s); it will fire "
                          "after the first actuator, in the trip's own thread",
                          getattr(self.actuators[i], "name", i), e)
                continue
            self._queues[i], self._threads[i] = q, t
        return self

    def _work(self, i: int, q: queue.SimpleQueue) -> None:
        a = self.actuators[i]
        while True:
            job = q.get()
            if job is None:
                return
            job.result, job.error = run_action(a, job.action, job.reason)
            job.done.set()

    def fire(self, action: str, reason: str = "",
             after_first: Callable[[], None] | None = None) -> list[ActionResult]:
        """Run ``action`` on every actuator at once: the first in this thread, the others
        on their workers. ``after_first`` runs once the first actuator has acted (while
        the others may still be acting). Returns a result per actuator, in order; raises
        one :class:`TripError` listing every failure after all were tried (its
        ``.results`` holds every result)."""
        acts = self.actuators
        jobs: list[_Job | None] = [None] * len(acts)
        for i in range(1, len(acts)):
            q, t = self._queues[i], self._threads[i]
            if q is not None and t is not None and t.is_alive():
                jobs[i] = _Job(action, reason)
                q.put(jobs[i])
        results: list[ActionResult | None] = [None] * len(acts)
        errors: list[str | None] = [None] * len(acts)
        if acts:
            results[0], errors[0] = run_action(acts[0], action, reason)
        if after_first is not None:
            try:
                after_first()
            except Exception:  # noqa: BLE001 - never in the way of the other actuators
                log.exception("after the first actuator")
        for i in range(1, len(acts)):
            job = jobs[i]
            if job is None:
                self.inline_fallbacks += 1
                results[i], errors[i] = run_action(acts[i], action, reason)
                continue
            job.done.wait()
            results[i], errors[i] = job.result, job.error
        return finish(action, results, errors)

    def close(self) -> None:
        for q in self._queues:
            if q is not None:
                q.put(None)


def finish(action: str, results: list, errors: list) -> list[ActionResult]:
    """The results of one firing, or one :class:`TripError` naming every failure."""
    failed = [e for e in errors if e is not None]
    if failed:
        n = len(results)
        msg = (f"{action} failed on {len(failed)} of {n} actuator{'' if n == 1 else 's'}: "
               + " || ".join(failed))
        if n > 1:
            log.error("%s", msg)
        err = TripError(msg)
        err.results = results  # type: ignore[attr-defined]
        raise err
    return [r for r in results if r is not None]
