"""Sample-to-trip latency of the gateway process against the bare I/O floor, measured in
the same run on two staggered ptys fed by one :class:`~benchmarks._gw_device.Device`.

Serial: the gateway (``serial-command`` trip on its own pty) and a bare reader process
that writes ``STOP`` on the marker; both are fed all the time, rounds alternate.
Modbus: the same with a ``modbus-coil`` trip; the pymodbus server (another process)
timestamps the arrival of the write_coil request; the floor calls ``write_coil`` itself.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks._gw_device import Device
from benchmarks._gw_setup import Bundle, Child, control, gateway_toml, start_gateway, vm

PY = sys.executable
LEAD = (6, 20)  # the fault comes 60..200 ms (random) after the previous trip settled
SETTLE_S = 0.05


@dataclass
class LatencyResult:
    gw: list[np.ndarray] = field(default_factory=list)  # per round, seconds
    floor: list[np.ndarray] = field(default_factory=list)
    missed: int = 0
    unexpected: int = 0
    rss: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, bytes) of the gateway
    hwm: int = 0
    notes: list[str] = field(default_factory=list)
    pairs: list[tuple[float, float]] = field(default_factory=list)  # gateway (t0, t1)
    trace: list[dict] = field(default_factory=list)  # _gw_trace lines
    floor_pairs: list[tuple[float, float]] = field(default_factory=list)
    floor_reads: list[float] = field(default_factory=list)  # the floor's read of the marker


def _wait_frames(dev: Device, name: str, k: int, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while dev.frames(name) < k and time.monotonic() < deadline:
        time.sleep(0.005)  # pacing a poll of the device's frame counter


def _serial_round(dev: Device, name: str, trips: int, res: LatencyResult,
                  reset, deadline: float, sample=None) -> np.ndarray:
    out = []
    p = dev.ptys[name]
    for _ in range(trips):
        if time.monotonic() > deadline:
            break
        if reset and p.unexpected_stops > res.unexpected:  # a trip we did not cause
            res.unexpected = p.unexpected_stops
            reset()
        k = dev.arm(name, *LEAD, aligned=reset is not None)
        try:
            t0, t1 = dev.results.get(timeout=LEAD[1] * 0.01 + 1.0)
            out.append(t1 - t0)
            (res.pairs if reset else res.floor_pairs).append((t0, t1))
        except Exception:  # queue.Empty: the trip never came
            dev.disarm()
            res.missed += 1
        _wait_frames(dev, name, k + 4)  # the faulty frame has left every window
        if reset:
            reset()
        if sample:
            sample()
        time.sleep(SETTLE_S)  # benchmark pacing: let the loop go quiet again
    return np.asarray(out)


def serial_latency(work: Path, bundle: Bundle, data: np.ndarray, rounds: int, trips: int,
                   budget_s: float, trace: bool = False) -> LatencyResult:
    res = LatencyResult()
    dev = Device(data, [("gw", 0.0), ("floor", 0.005)])
    children: list[Child] = []
    try:
        dev.start()
        gpath = dev.ptys["gw"].path
        cfg = gateway_toml(work, "serial", gpath, bundle,
                           f'kind = "serial-command"\nurl = "serial://{gpath}"')
        gw = start_gateway(cfg, "gw-trace" if trace else "gw-serial", work, trace=trace)
        children.append(gw)
        state = work / "state-serial"
        dev.activate("gw")
        fl = Child([PY, "-m", "benchmarks._gw_device", "serial-floor", dev.ptys["floor"].path],
                   "floor-serial", work, stdin=True, priority=True)
        children.append(fl)
        fl.wait_for("ready", 30)
        dev.activate("floor")
        time.sleep(1.0)  # warm up at the real rate before the first trip
        st = control(state, "/status")
        if st["tripped"]:
            res.notes.append(f"gateway tripped during warm-up: {st['trip_reason']}")
            control(state, "/reset", {"note": "bench"})

        def reset() -> None:
            r = control(state, "/reset", {"note": "bench"})
            if not r.get("ok"):
                res.notes.append(f"reset: {r.get('detail')}")

        def sample() -> None:
            res.rss.append((time.monotonic(), vm(gw.pid)["VmRSS"]))

        deadline = time.monotonic() + budget_s
        for _ in range(rounds):
            res.gw.append(_serial_round(dev, "gw", trips, res, reset, deadline, sample))
            res.floor.append(_serial_round(dev, "floor", trips, res, None, deadline, sample))
        res.hwm = vm(gw.pid)["VmHWM"]
        if trace:
            res.trace = [json.loads(ln) for ln in gw.text().splitlines() if ln.startswith("{")]
            res.floor_reads = [float(ln.split()[1]) for ln in fl.text().splitlines()
                               if ln.startswith("M ")]
        st = control(state, "/status")
        src = next(iter(st["sources"].values()))
        res.notes.append(
            f"gateway saw {st['windows']} windows, crc_errors={src.get('crc_errors')}, "
            f"missed_frames={src.get('missed_frames')}, queue_drops="
            f"{st['metrics'].get('queue_drops', 'n/a') if isinstance(st['metrics'], dict) else 'n/a'}; "
            f"device max lateness {dev.max_late_ms:.1f} ms, partial writes "
            f"{sum(p.partial_writes for p in dev.ptys.values())}")
    finally:
        for c in reversed(children):
            c.stop()
        dev.stop()
    return res


def _server_writes(server: Child, addr: int, after: float, timeout: float = 1.0) -> float | None:
    """perf_counter at which the server got the first write of 1 to ``addr`` after ``after``."""
    deadline = time.monotonic() + timeout
    time.sleep(0.03)  # the server stamps the arrival itself; read its log a bit later
    while True:
        for line in server.text().splitlines():
            w = line.split()
            if len(w) == 4 and w[0] == "W" and int(w[2]) == addr and w[3] == "1":
                t = float(w[1])
                if t > after:
                    return t
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)  # pacing the poll of the server's log


def _modbus_round(dev: Device, name: str, trips: int, res: LatencyResult, server: Child,
                  addr: int, reset, deadline: float) -> np.ndarray:
    out = []
    for _ in range(trips):
        if time.monotonic() > deadline:
            break
        k = dev.arm(name, *LEAD, aligned=reset is not None, want_stop=False)
        try:
            t0, _ = dev.results.get(timeout=LEAD[1] * 0.01 + 1.0)
        except Exception:  # queue.Empty: the device did not write it (pty gone)
            dev.disarm()
            res.missed += 1
            continue
        t1 = _server_writes(server, addr, t0)
        if t1 is None:
            res.missed += 1
        else:
            out.append(t1 - t0)
        _wait_frames(dev, name, k + 4)
        if reset:
            reset()
        time.sleep(SETTLE_S)  # benchmark pacing
    return np.asarray(out)


def modbus_latency(work: Path, bundle: Bundle, data: np.ndarray, rounds: int, trips: int,
                   budget_s: float) -> LatencyResult:
    res = LatencyResult()
    dev = Device(data, [("gw", 0.0), ("floor", 0.005)])
    children: list[Child] = []
    try:
        server = Child([PY, "-m", "benchmarks._gw_device", "modbus-server"], "modbus-server",
                       work, stdin=True, priority=True)
        children.append(server)
        port = int(server.wait_for("port ", 30).split()[1])
        dev.start()
        gpath = dev.ptys["gw"].path
        cfg = gateway_toml(work, "modbus", gpath, bundle,
                           f'kind = "modbus-coil"\nurl = "modbus-tcp://127.0.0.1:{port}"\n'
                           'address = 0')
        gw = start_gateway(cfg, "gw-modbus", work)
        children.append(gw)
        state = work / "state-modbus"
        dev.activate("gw")
        fl = Child([PY, "-m", "benchmarks._gw_device", "modbus-floor", dev.ptys["floor"].path,
                    str(port)], "floor-modbus", work, stdin=True, priority=True)
        children.append(fl)
        fl.wait_for("ready", 30)
        dev.activate("floor")
        time.sleep(1.0)  # warm up at the real rate

        def reset() -> None:
            control(state, "/reset", {"note": "bench"})

        reset()
        deadline = time.monotonic() + budget_s
        for _ in range(rounds):
            res.gw.append(_modbus_round(dev, "gw", trips, res, server, 0, reset, deadline))
            res.floor.append(_modbus_round(dev, "floor", trips, res, server, 1, None, deadline))
        res.unexpected = dev.ptys["gw"].unexpected_stops
    finally:
        for c in reversed(children):
            c.stop()
        dev.stop()
    return res


def summary(runs: list[np.ndarray]) -> tuple[float, float, int]:
    """(median of per-round p50, median of per-round p99) in ms, and the sample count."""
    runs = [r for r in runs if len(r)]
    if not runs:
        return float("nan"), float("nan"), 0
    p50 = float(np.median([np.percentile(r, 50) for r in runs])) * 1e3
    p99 = float(np.median([np.percentile(r, 99) for r in runs])) * 1e3
    return p50, p99, sum(len(r) for r in runs)


STAGES = (("device write -> gateway read returns", None, "read"),
          ("decode + block + queue put", "read", "queued"),
          ("queue -> fast path thread runs", "queued", "dequeued"),
          ("windowing + features", "dequeued", "features"),
          ("score (onnxruntime)", "features", "scored"),
          ("decide + trip bookkeeping", "scored", "trip"),
          ("trip() -> STOP handed to pyserial", "trip", "write"),
          ("STOP write -> device reads it", "write", None))


def breakdown(res: LatencyResult) -> list[tuple[str, float, float]]:
    """(stage, p50 µs, p90 µs) from the traced trips, matched to the device's (t0, t1)."""
    rows: list[list[float]] = [[] for _ in STAGES]
    for t0, t1 in res.pairs:
        line = next((d for d in res.trace if t0 < d["read"] < t1 and d["write"]), None)
        if line is None:
            continue
        stamps = {**line, None: 0.0}
        for i, (_, a, b) in enumerate(STAGES):
            ta = t0 if a is None else stamps[a]
            tb = t1 if b is None else stamps[b]
            if ta and tb:
                rows[i].append((tb - ta) * 1e6)
    names = [name for name, _, _ in STAGES]
    one_way, back = [], []
    for t0, t1 in res.floor_pairs:
        t = next((r for r in res.floor_reads if t0 < r < t1), None)
        if t is not None:
            one_way.append((t - t0) * 1e6)
            back.append((t1 - t) * 1e6)
    rows += [one_way, back]
    names += ["floor: device write -> floor read returns", "floor: read -> device reads STOP"]
    return [(name, float(np.percentile(r, 50)) if r else float("nan"),
            float(np.percentile(r, 90)) if r else float("nan"))
            for name, r in zip(names, rows)]
