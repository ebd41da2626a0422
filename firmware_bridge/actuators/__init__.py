"""Trip actuators: what stops the machine, fast, certain, and loud when it fails.

    spec = ActuatorSpec.from_dict({"kind": "modbus-coil", "url": "modbus-tcp://plc:502",
                                   "address": 0}, key="trip[0]")
    act = open_actuator(spec)          # connects now, so the trip doesn't pay for it
    result = act.trip("bearing fault") # ActionResult(ok, latency_s, attempts, detail)
    act.reset(); act.close()

Kinds (one module each): ``modbus-coil`` / ``modbus-register`` (write, then read back and
compare; :mod:`firmware_bridge.actuators.modbus`), ``serial-command`` (``STOP`` on the
device's serial line, wait for its ack; :mod:`firmware_bridge.actuators.serial`), and
``command`` (run a hook, exit 0 = success; :mod:`firmware_bridge.actuators.command`).
Every action is retried ``retries`` times; when all attempts fail, it is logged at ERROR
on the ``firmware_bridge.actuators`` logger and raises :class:`TripError` naming the
actuator and every attempt's failure. :func:`trip_all` fires several actuators at
once, each with its own result, and raises one :class:`TripError` listing every one
that failed after trying them all.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from firmware_bridge.actuators.base import ActionResult, Actuator, log
from firmware_bridge.actuators.group import ActuatorGroup, finish, run_action
from firmware_bridge.actuators.spec import KINDS, ActuatorSpec
from firmware_bridge.errors import TripError

__all__ = [
    "KINDS", "ActionResult", "Actuator", "ActuatorGroup", "ActuatorSpec", "open_actuator",
    "reset_all", "trip_all",
]


def open_actuator(spec: ActuatorSpec, serial_link: Any = None, *, connect: bool = True) -> Actuator:
    """Open the actuator ``spec`` describes, ready to trip.

    Modbus actuators connect now and serial ones open their port now (unless
    ``connect=False``, which defers that to the first action): an unreachable device is a
    :class:`PortError` at start-up rather than at the moment the machine must stop.
    A ``command`` whose program is not on PATH is a :class:`ConfigError` naming
    ``<key>.argv[0]``. ``serial_link`` (a running :class:`SerialSource`) is used by
    ``serial-command`` instead of opening the port a second time.
    """
    if spec.kind in ("modbus-coil", "modbus-register"):
        from firmware_bridge.actuators.modbus import ModbusActuator

        return ModbusActuator(spec, connect=connect)
    if spec.kind == "serial-command":
        from firmware_bridge.actuators.serial import SerialCommandActuator

        return SerialCommandActuator(spec, serial_link, connect=connect)
    if spec.kind == "command":
        from firmware_bridge.actuators.command import CommandActuator

        return CommandActuator(spec)
    raise TripError(f"{spec.key}.kind: {spec.kind!r} is not one of {', '.join(KINDS)}")


def _fire(actuators: Sequence[Actuator], action: str, reason: str) -> list[ActionResult]:
    """Run ``action`` on every actuator: the first in this thread before any thread is
    started (a process out of threads still sends its first stop), the others on
    threads of their own, or in this thread after the first if none can be started."""
    acts = list(actuators)
    results: list[ActionResult | None] = [None] * len(acts)
    errors: list[str | None] = [None] * len(acts)

    def run(i: int) -> None:
        results[i], errors[i] = run_action(acts[i], action, reason)

    threads, inline = [], []
    for i in range(1, len(acts)):
        t = threading.Thread(target=run, args=(i,), name=f"{action}-{i}", daemon=True)
        try:
            t.start()
        except RuntimeError as e:  # out of threads: run it here, after the first
            log.error("%s %s: cannot start a thread (%s); running it after the first",
                      action, getattr(acts[i], "name", i), e)
            inline.append(i)
            continue
        threads.append(t)
    if acts:
        run(0)
    for i in inline:
        run(i)
    for t in threads:
        t.join()
    return finish(action, results, errors)


def trip_all(actuators: Sequence[Actuator], reason: str = "") -> list[ActionResult]:
    """Trip every actuator (concurrently, so a dead one does not delay the others).

    Returns one result per actuator, in order. If any failed (after its retries), raises
    one :class:`TripError` listing every failure, after all were tried; the error's
    ``.results`` holds every actuator's result, the failed ones with ``ok=False``.
    """
    return _fire(actuators, "trip", reason)


def reset_all(actuators: Sequence[Actuator]) -> list[ActionResult]:
    """Reset every actuator; same semantics as :func:`trip_all`."""
    return _fire(actuators, "reset", "")
