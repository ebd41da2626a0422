"""Simulator speed: ``Machine.generate`` throughput, and the CPU the ``simulate`` process
uses while streaming 3 × 25.6 kHz in real time over a pty (target: ≤ 15 % of one core).

Run: ``.venv/bin/python -m benchmarks sim``.
"""

from __future__ import annotations

import os
import select
import statistics
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import psutil

from firmware_bridge.codec.csvlines import CsvDecoder
from firmware_bridge.codec.frames import FrameDecoder
from firmware_bridge.sim.machine import Machine

REPO = Path(__file__).resolve().parents[1]


def generation_speed(block: int, faults: tuple[str, ...], seconds: float = 0.6, runs: int = 5) -> float:
    """Median samples/s (per axis; each sample is 3 axes) of ``Machine.generate(block)``."""
    rates = []
    for r in range(runs):
        m = Machine("pump", rate=25600.0, seed=r)
        for f in faults:
            m.inject(f)
        n = 0
        t = time.perf_counter()
        while (el := time.perf_counter() - t) < seconds:
            m.generate(block)
            n += block
        rates.append(n / el)
    return statistics.median(rates)


def stream_cpu(fmt: str, seconds: float, extra: tuple[str, ...] = ()) -> dict[str, float]:
    """Run ``simulate --serial`` at 25.6 kHz, read its pty, and measure its CPU share."""
    p = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge.sim.cli", "--serial", "--format", fmt,
         "--rate", "25600", "--block", "256", *extra],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        path = None
        for line in p.stdout:
            if line.startswith("serial:"):
                path = line.split()[1]
            if line.startswith("ready"):
                break
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        dec = FrameDecoder() if fmt == "frames" else CsvDecoder()
        counts = {"bytes": 0, "samples": 0}
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                r, _, _ = select.select([fd], [], [], 0.1)
                if not r:
                    continue
                data = os.read(fd, 1 << 16)
                counts["bytes"] += len(data)
                if fmt == "frames":
                    counts["samples"] += sum(len(f.samples) for f in dec.feed(data) if hasattr(f, "samples"))
                else:
                    counts["samples"] += len(dec.feed(data)[0])

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        proc = psutil.Process(p.pid)
        threading.Event().wait(1.0)  # let start-up (imports, pty open) pass
        c0, t0, s0, b0 = sum(proc.cpu_times()[:2]), time.monotonic(), counts["samples"], counts["bytes"]
        threading.Event().wait(seconds)
        c1, t1, s1, b1 = sum(proc.cpu_times()[:2]), time.monotonic(), counts["samples"], counts["bytes"]
        stop.set()
        th.join()
        os.close(fd)
        missed = getattr(dec, "missed", 0)
        return {"cpu_pct": 100 * (c1 - c0) / (t1 - t0), "samples_per_s": (s1 - s0) / (t1 - t0),
                "mb_per_s": (b1 - b0) / 1e6 / (t1 - t0), "missed_frames": missed}
    finally:
        p.terminate()
        p.wait(10)


def main() -> None:
    print("Machine.generate at 25.6 kHz, 3 axes (median of 5 runs):")
    for block, faults in ((256, ()), (256, ("outer_race", "looseness", "cavitation")), (25600, ())):
        sps = generation_speed(block, faults)
        label = "+".join(faults) or "healthy"
        print(f"  block {block:>5}, {label:<32} {sps / 1e6:6.2f} M samples/s = {sps / 25600:6.0f}x real time"
              f" = {100 * 25600 / sps:5.2f} % of a core at 25.6 kHz")
    print("simulate --serial at 3 x 25.6 kHz in real time, process CPU / wall (target <= 15 %):")
    for fmt, secs, extra, label in (
        ("frames", 10.0, (), "frames"),
        ("csv", 6.0, (), "csv"),
        ("frames", 6.0, ("--fault", "outer_race", "--modbus-tcp", "127.0.0.1:0"), "frames+fault+modbus"),
    ):
        r = stream_cpu(fmt, secs, extra)
        print(f"  {label:<22} cpu {r['cpu_pct']:5.1f} % of one core, {r['samples_per_s']:8.0f} samples/s "
              f"received, {r['mb_per_s']:.2f} MB/s, missed frames {r['missed_frames']}")


if __name__ == "__main__":
    main()
