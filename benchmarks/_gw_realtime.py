"""The gateway process at the real rate, fed by ``sensorml simulate`` (3 × 25.6 kHz frames
on a pty): CPU-seconds per second of signal (psutil, recording included), RSS over time
and peak RSS (VmHWM) at steady state."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks._gw_setup import RATE, Bundle, Child, control, gateway_toml, start_gateway, vm

PY = sys.executable


@dataclass
class RealtimeResult:
    cpu_per_signal_s: float = float("nan")
    sim_cpu_per_s: float = float("nan")
    signal_s: float = 0.0
    hwm: int = 0
    rss: list[tuple[float, int]] = field(default_factory=list)
    threads: int = 0
    notes: list[str] = field(default_factory=list)


def _steady_decision(bundle: Bundle) -> str:
    """k = 3 of n = 5 with alarm and trip between the healthy stream's highest score and a
    faulty window's: the steady state being measured is a healthy machine recording NORMAL
    windows (a false alarm would record every window raw and a trip stops the simulator)."""
    mid = (bundle.healthy_max + bundle.faulty_score) / 2
    trip = max(bundle.thresholds["trip"], mid)
    alarm = max(bundle.thresholds["alarm"], 0.9 * trip)
    return f"k = 3\nn = 5\nalarm = {alarm:.6f}\ntrip = {trip:.6f}"


def _samples(state: Path) -> tuple[float, dict]:
    st = control(state, "/status")
    src = next(iter(st["sources"].values()))
    return float(src["samples"]), st


def realtime(work: Path, bundle: Bundle, warmup_s: float, measure_s: float,
             sample_every_s: float = 1.0) -> RealtimeResult:
    """Run simulator + gateway; measure CPU over ``measure_s`` after ``warmup_s``; sample
    RSS every ``sample_every_s`` over the whole run (warm-up included)."""
    res = RealtimeResult()
    children: list[Child] = []
    try:
        sim = Child([PY, "-m", "firmware_bridge.sim.cli", "--serial", "--format", "frames",
                     "--rate", str(RATE), "--seed", "23"], "simulator", work, stdin=True)
        children.append(sim)
        path = sim.wait_for("serial:", 30).split()[1]
        sim.wait_for("ready", 30)
        cfg = gateway_toml(work, "realtime", path, bundle,
                           f'kind = "serial-command"\nurl = "serial://{path}"',
                           decision=_steady_decision(bundle))
        gw = start_gateway(cfg, "gw-realtime", work, priority=False)
        children.append(gw)
        state = work / "state-realtime"
        proc, sproc = psutil.Process(gw.pid), psutil.Process(sim.pid)
        t_start = time.monotonic()
        end_warm = t_start + warmup_s
        while time.monotonic() < end_warm:
            res.rss.append((time.monotonic(), vm(gw.pid)["VmRSS"]))
            time.sleep(min(sample_every_s, max(0.0, end_warm - time.monotonic())))  # pacing
        n0, _ = _samples(state)
        c0, s0, t0 = sum(proc.cpu_times()[:2]), sum(sproc.cpu_times()[:2]), time.monotonic()
        end = t0 + measure_s
        while time.monotonic() < end:
            time.sleep(min(sample_every_s, max(0.0, end - time.monotonic())))  # pacing
            res.rss.append((time.monotonic(), vm(gw.pid)["VmRSS"]))
        c1, s1, t1 = sum(proc.cpu_times()[:2]), sum(sproc.cpu_times()[:2]), time.monotonic()
        n1, st = _samples(state)
        res.signal_s = (n1 - n0) / RATE
        res.cpu_per_signal_s = (c1 - c0) / res.signal_s if res.signal_s > 0 else float("nan")
        res.sim_cpu_per_s = (s1 - s0) / (t1 - t0)
        res.hwm = vm(gw.pid)["VmHWM"]
        res.threads = proc.num_threads()
        rec = st["recorder"]
        verdicts = st["metrics"].get("verdicts") if isinstance(st["metrics"], dict) else None
        res.notes.append(
            f"{res.signal_s:.1f} s of signal in {t1 - t0:.1f} s wall; windows {st['windows']}, "
            f"verdicts {verdicts}, tripped={st['tripped']}, recorder written={rec['written']}, "
            f"dropped={sum(rec['dropped'].values())}, threads={res.threads}")
    finally:
        for c in reversed(children):
            c.stop()
    return res
