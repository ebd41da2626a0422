"""Real processes for the end-to-end and fault tests: the simulator, the gateway, their
config and their structured log lines. :class:`Proc` is the demo's own child process
(``sensorml.demo.procs``: lines read into queues, waits with deadlines). Used by the
``e2e`` fixture (``tests/sensorml/conftest.py``), the ``fx`` fixture
(``tests/faults/conftest.py``) and the simulator tests; the ``procs`` fixture that stops
them all is in ``tests/conftest.py``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sensorml.demo.procs import Proc

__all__ = ["Proc", "log_json", "sim_status", "quit_sim", "start_gateway", "start_sim", "stop_all",
           "wait_sim_state", "write_config"]


def write_config(tmp_path: Path, body: str, *, device_id: str = "test-pump",
                 name: str = "gateway.toml", state: str = "state") -> Path:
    """``gateway.toml`` in ``tmp_path``: a device id, a state folder, the control port on
    an ephemeral port, then ``body``."""
    p = tmp_path / name
    p.write_text(f'device_id = "{device_id}"\nstate_dir = "{tmp_path / state}"\n'
                 f'[metrics]\nport = 0\n{body}')
    return p


def start_gateway(cfg: Path, log_name: str = "gateway.log", wait: bool = True,
                  env: dict | None = None) -> Proc:
    """``sensorml gateway --config cfg`` as a process (waits for its ``running`` line)."""
    gw = Proc([sys.executable, "-m", "sensorml.cli", "gateway", "--config", str(cfg)],
              "gateway", cfg.parent / log_name, env=env)
    if wait:
        gw.expect(lambda s: "running" in s, 30, "start")
    return gw


def start_sim(tmp_path: Path, *args: str, log_name: str = "simulator.log") -> tuple[Proc, dict]:
    """Run ``sensorml simulate`` as a process; returns it and its endpoints."""
    sim = Proc([sys.executable, "-m", "firmware_bridge.sim.cli", *args], "simulator",
               tmp_path / log_name)
    ends: dict = {}
    while True:
        line = sim.expect(lambda s: s.split(":")[0] in ("serial", "modbus-tcp", "ready"), 20,
                          "print its endpoints")
        if line == "ready":
            return sim, ends
        kind, rest = line.split(":", 1)
        ends[kind] = rest.split()[0]


def sim_status(sim: Proc) -> str:
    """The simulator's own account of the machine (``running``, ``coasting``, ...)."""
    while not sim.out.empty():
        sim.out.get_nowait()
    sim.send("status")
    return sim.expect(lambda s: s.startswith("ok status"), 5, "answer status")[10:]


def wait_sim_state(sim: Proc, states: tuple[str, ...], timeout: float) -> str:
    """Ask the simulator for its state until it is one of ``states`` ("" at the deadline;
    the Modbus device applies coil writes on its next register update, up to 100 ms
    later). Each question waits for its answer: no pause between them is needed."""
    deadline = time.monotonic() + timeout
    while True:
        state = sim_status(sim).split()[0]
        if state in states:
            return state
        if time.monotonic() > deadline:
            return ""


def log_json(gw: Proc, pred, timeout: float, what: str) -> dict:
    """Wait for a structured log line (JSON on stderr) whose message matches ``pred``."""
    line = gw.expect(lambda s: s.startswith("{") and pred(json.loads(s)["msg"]), timeout, what,
                     stream="err")
    return json.loads(line)


def _ask_to_quit(sim: Proc) -> None:
    try:
        sim.send("quit")
    except (BrokenPipeError, OSError, ValueError):  # stdin closed, or it is gone
        pass


def quit_sim(sim: Proc, timeout: float = 10.0) -> int:
    """Ask the simulator to quit (``quit`` on its stdin); its exit status."""
    _ask_to_quit(sim)
    return sim.p.wait(timeout)


def stop_all(started: list[Proc]) -> None:
    """Stop processes newest first; a simulator is asked to quit before it is stopped."""
    for p in reversed(started):
        if p.name == "simulator":
            _ask_to_quit(p)
        p.stop()
