"""Modbus round trips on loopback: a poll of a 10-point map, and a coil write + read-back.

The server is pymodbus's own (``ModbusTestServer``) in a separate process, as a PLC or
drive would be. Figures are medians over several runs of each run's p50/p99, for a hot
loop and at a paced 100 requests/s (latency after an idle gap is higher: see PITFALLS).
The floor to compare with is a bare pymodbus read on loopback, measured here too
(~0.2 ms on this kind of machine).

    .venv/bin/python -m benchmarks modbus
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

RUNS = 5
HOT_N = 1000
PACED_N = 200
PACED_RATE = 100.0

TEN_POINTS = {
    "points": [
        *({"name": f"f{i}", "table": "holding", "address": 2 * i, "type": "float32"} for i in range(6)),
        {"name": "speed", "table": "holding", "address": 12, "type": "uint16"},
        {"name": "status", "table": "holding", "address": 13, "type": "int16"},
        {"name": "energy", "table": "input", "address": 0, "type": "uint32"},
        {"name": "running", "table": "coil", "address": 0},
    ]
}


def _serve() -> None:
    """Child process: run the test server, print its port, serve until stdin closes."""
    from firmware_bridge.sim.modbus_server import ModbusTestServer

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    with ModbusTestServer({1: {}}) as server:
        print(server.port, flush=True)
        sys.stdin.read()


def _measure(fn: Callable[[], object], n: int, rate: float | None) -> np.ndarray:
    """Latencies (s) of ``n`` calls, back to back or paced at ``rate`` per second."""
    out = np.empty(n)
    period = 1.0 / rate if rate else 0.0
    next_t = time.perf_counter()
    for i in range(n):
        if period:
            next_t += period
            while (left := next_t - time.perf_counter()) > 0:
                time.sleep(left)
        t = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t
    return out


def _figures(fn: Callable[[], object]) -> dict[str, tuple[float, float]]:
    """{mode: (median p50 ms, median p99 ms)} over RUNS runs."""
    res = {}
    for mode, n, rate in (("hot loop", HOT_N, None), (f"paced {PACED_RATE:g}/s", PACED_N, PACED_RATE)):
        p50s, p99s = [], []
        for _ in range(RUNS):
            lat = _measure(fn, n, rate) * 1e3
            p50s.append(float(np.percentile(lat, 50)))
            p99s.append(float(np.percentile(lat, 99)))
        res[mode] = (statistics.median(p50s), statistics.median(p99s))
    return res


def main() -> None:
    from firmware_bridge.modbus.client import make_client
    from firmware_bridge.modbus.plan import plan_reads
    from firmware_bridge.modbus.regmap import parse_map
    from firmware_bridge.sources.modbus import ModbusSource

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, "-c", "from benchmarks.bench_modbus import _serve; _serve()"],
        cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        port = int(child.stdout.readline())
        url = f"modbus-tcp://127.0.0.1:{port}"
        regmap = parse_map(TEN_POINTS)
        print(f"server: pymodbus {url} in a child process; {RUNS} runs per figure, "
              f"{HOT_N} calls hot / {PACED_N} paced")
        client = make_client(url, 1.0)
        client.connect()
        src = ModbusSource(url, lambda b: None, map=regmap, timeout_s=1.0)
        rows = [
            ("floor: pymodbus read 1 register", lambda: client.read_holding_registers(0, count=1, device_id=1)),
            (f"poll 10 points ({len(plan_reads(regmap))} requests) -> Block", src.poll_once),
            ("coil write + read-back", lambda: (client.write_coil(0, True, device_id=1),
                                                client.read_coils(0, count=1, device_id=1))),
        ]
        for name, fn in rows:
            for _ in range(50):  # warm up connections and caches
                fn()
            for mode, (p50, p99) in _figures(fn).items():
                print(f"{name:44s} {mode:12s} p50 {p50:6.3f} ms   p99 {p99:6.3f} ms")
        block = src.poll_once()
        assert block.point_ok.all(), "benchmark poll failed"
        src.stop()
        client.close()
    finally:
        child.stdin.close()
        child.wait(10)


if __name__ == "__main__":
    main()
