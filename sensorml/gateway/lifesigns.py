"""Life signs: proof, sent outward, that the fast path is still turning.

Two signs, each on a thread of its own and each gated by the same rule: a sign goes out
only if :attr:`FastPath.progress <sensorml.edge.fastpath.FastPath.progress>` (one more at
every turn of the gateway's loop, at least every 50 ms) moved since the previous sign.
A fast path that hangs (a deadlock, a blocked call, ``kill -STOP``) stops both signs
within one period, while the rest of the process may still look alive.

- **heartbeat** (``[heartbeat]`` in the config): toggles a coil or increments a holding
  register on the controller over a Modbus connection of its own, or writes ``HB <n>``
  on the sensor's serial line (PROTOCOL.md §4) without ever waiting for the port. The
  controller stops the machine when beats stop coming. Failures are counted
  (``sensorml_heartbeat_failures_total``) and logged once per outage.
- **systemd watchdog**: ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC``
  (:mod:`sensorml.gateway.sdnotify`), plus ``READY=1`` when armed and ``STOPPING=1`` at
  close. Without ``$NOTIFY_SOCKET`` nothing is created.

Neither touches the trip path: no lock the fast path takes, no connection it uses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sensorml.config import HeartbeatConfig
from sensorml.gateway import sdnotify

log = logging.getLogger("sensorml.gateway.lifesigns")

__all__ = ["LifeSigns", "ModbusBeat", "Pinger", "SerialBeat"]


class ModbusBeat:
    """Toggle a coil / increment a holding register, on a client of its own."""

    def __init__(self, cfg: HeartbeatConfig) -> None:
        from firmware_bridge.modbus.client import make_client

        self.cfg = cfg
        self.client = make_client(cfg.url, cfg.timeout_s, retries=0)
        table = "coil" if cfg.kind == "modbus-coil" else "holding register"
        self.target = f"{table} {cfg.address} device {cfg.device_id} at {cfg.url}"

    def send(self, n: int) -> bool:
        from firmware_bridge.errors import PortError

        c, cfg = self.client, self.cfg
        try:
            if not c.connected and not c.connect():
                raise PortError(f"cannot connect within {cfg.timeout_s:g} s")
            if cfg.kind == "modbus-coil":
                rr = c.write_coil(cfg.address, n % 2 == 1, device_id=cfg.device_id)
            else:
                rr = c.write_register(cfg.address, n & 0xFFFF, device_id=cfg.device_id)
            if rr is None or rr.isError():
                raise PortError(f"device answered {rr}")
        except Exception:
            c.close()  # the next beat starts on a clean connection
            raise
        return True

    def close(self) -> None:
        self.client.close()


class SerialBeat:
    """``HB <n>`` on the serial source's port, skipped rather than wait for a command."""

    def __init__(self, link) -> None:
        self.link = link
        self.target = f"serial line {link.port_name}"

    def send(self, n: int) -> bool:
        return self.link.try_write(f"HB {n}\n".encode("ascii"))

    def close(self) -> None:
        pass


class Pinger:
    """Call ``send(n)`` every ``period_s`` while ``progress()`` moves (module docstring).

    ``send`` returns False for a beat skipped without fault, raises for a failed one.
    Failures count in ``on_failure()`` and are logged once per outage; a stalled fast
    path is logged once per stall."""

    def __init__(self, name: str, target: str, period_s: float, progress: Callable[[], int],
                 send: Callable[[int], bool], *, on_sent: Callable[[], None] = lambda: None,
                 on_failure: Callable[[], None] = lambda: None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name, self.target, self.period_s = name, target, period_s
        self.progress, self._send = progress, send
        self.on_sent, self.on_failure = on_sent, on_failure
        self.monotonic = monotonic
        self.sent = self.failures = self.withheld = 0
        self.last_sent: float | None = None
        self._failing = 0
        self._stalled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"life-{name}", daemon=True)

    def start(self) -> Pinger:
        self._thread.start()
        return self

    def _run(self) -> None:
        seen = self.progress()
        while not self._stop.wait(self.period_s):
            now = self.progress()
            if now == seen:
                self.withheld += 1
                if not self._stalled:
                    self._stalled = True
                    log.error("fast path has not advanced for %.2f s: %s withheld", self.period_s,
                              self.name)
                continue
            seen = now
            if self._stalled:
                self._stalled = False
                log.warning("fast path advancing again: %s resumed", self.name)
            self.beat()

    def beat(self) -> None:
        """Send the next sign now (the thread's body; the fast path never calls it)."""
        try:
            if not self._send(self.sent + 1):  # a failed beat is retried with its number
                return
        except Exception as e:  # noqa: BLE001 - any failure of a life sign is counted
            self.failures += 1
            self.on_failure()
            self._failing += 1
            if self._failing == 1:
                log.error("%s to %s failing: %s", self.name, self.target, e)
            return
        if self._failing:
            log.warning("%s to %s back after %d failed", self.name, self.target, self._failing)
            self._failing = 0
        self.sent += 1
        self.last_sent = self.monotonic()
        self.on_sent()

    def status(self) -> dict:
        age = None if self.last_sent is None else round(self.monotonic() - self.last_sent, 3)
        return {"target": self.target, "period_s": self.period_s, "sent": self.sent,
                "failures": self.failures, "withheld": self.withheld, "failing": self._failing > 0,
                "last_sent_age_s": age}

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2 * self.period_s + 1.0)


class LifeSigns:
    """The gateway's heartbeat and systemd notifications (module docstring)."""

    def __init__(self, heartbeat: HeartbeatConfig | None, progress: Callable[[], int], *,
                 serial_link=None, metrics=None, env=None) -> None:
        import os

        env = os.environ if env is None else env
        self.notifier = sdnotify.from_environ(env)
        self.pingers: list[Pinger] = []
        self._beat = None
        if heartbeat is not None:
            self._beat = SerialBeat(serial_link) if heartbeat.kind == "serial" else ModbusBeat(heartbeat)
            self.pingers.append(Pinger(
                "heartbeat", self._beat.target, heartbeat.period_s, progress, self._beat.send,
                on_sent=metrics.heartbeats.inc if metrics else lambda: None,
                on_failure=metrics.heartbeat_failures.inc if metrics else lambda: None))
        period = sdnotify.watchdog_period(env) if self.notifier is not None else None
        if period is not None:
            notifier = self.notifier
            self.pingers.append(Pinger("systemd watchdog", "$NOTIFY_SOCKET", period, progress,
                                       lambda n: notifier.send("WATCHDOG=1")))

    def start(self, status: str = "") -> LifeSigns:
        """Tell systemd the gateway is armed, then start the signs."""
        if self.notifier is not None:
            self.notifier.send("READY=1", *([f"STATUS={status}"] if status else []))
        for p in self.pingers:
            p.start()
        return self

    def status(self) -> dict:
        return {p.name: p.status() for p in self.pingers}

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.send("STOPPING=1")
        for p in self.pingers:
            p.close()
        if self._beat is not None:
            self._beat.close()
        if self.notifier is not None:
            self.notifier.close()
