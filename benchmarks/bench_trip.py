"""Trip latency: how long from ``actuator.trip()`` to a verified stop.

- modbus-coil: write_coil + read-back against a pymodbus server in a *separate process*
  on loopback, hot loop and paced (one trip every 20 ms, as a real trip comes after
  idle time), beside the raw pymodbus single round trip measured the same way;
- serial-command: ``STOP\\n`` → ``#ack STOP`` over a real pty, the device a thread;
- command hook: spawn ``true`` and wait for exit 0.

Each figure is the median over several runs of that run's p50 / p99.
Floor (PITFALLS.md): pymodbus read/write round trip on loopback ~0.2 ms, so a verified
coil trip (two round trips) floors near 0.4 ms.

Run: ``python -m benchmarks trip``.
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import shutil
import subprocess
import sys
import threading
import time

import numpy as np

from firmware_bridge.actuators import ActuatorSpec, open_actuator

RUNS = 5


def _serve() -> None:
    """Child process: a pymodbus TCP server on 127.0.0.1 port 0; prints the port, runs
    until stdin closes."""
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    async def main() -> None:
        blocks = ([SimData(0, count=16, values=False, datatype=DataType.BITS)],
                  [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                  [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
                  [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)])
        server = ModbusTcpServer(SimDevice(1, simdata=blocks), address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        print(server.transport.sockets[0].getsockname()[1], flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        await server.shutdown()

    asyncio.run(main())


def _stats(runs: list[np.ndarray]) -> str:
    p50 = float(np.median([np.percentile(r, 50) for r in runs])) * 1e3
    p99 = float(np.median([np.percentile(r, 99) for r in runs])) * 1e3
    return f"p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  ({len(runs)} runs x {len(runs[0])})"


def _timed(fn, n: int, pace_s: float = 0.0) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        if pace_s:
            time.sleep(pace_s)  # benchmark pacing, not a wait for anything
        t0 = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - t0
    return out


def bench_modbus() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "from benchmarks.bench_trip import _serve; _serve()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        port = int(proc.stdout.readline())
        url = f"modbus-tcp://127.0.0.1:{port}"
        spec = ActuatorSpec.from_dict({"kind": "modbus-coil", "url": url, "timeout": 1.0})
        act = open_actuator(spec)
        client = act.client  # the same connected pymodbus client, for the raw floor

        def action(i: int) -> None:
            r = act.trip() if i % 2 == 0 else act.reset()
            assert r.ok and r.attempts == 1, r

        def raw(i: int) -> None:
            client.write_coil(5, bool(i % 2), device_id=1)

        _timed(action, 200)  # warm-up
        hot = [_timed(action, 1000) for _ in range(RUNS)]
        paced = [_timed(action, 100, pace_s=0.02) for _ in range(RUNS)]
        floor = [_timed(raw, 1000) for _ in range(RUNS)]
        act.close()
        print(f"modbus raw write_coil round trip (floor) {_stats(floor)}")
        print(f"modbus-coil trip+verify, hot loop      {_stats(hot)}")
        print(f"modbus-coil trip+verify, every 20 ms   {_stats(paced)}")
        print("  PITFALLS floor: pymodbus round trip ~0.2 ms -> ~0.4 ms for write + read-back")
    finally:
        proc.stdin.close()
        proc.wait(10)


def bench_serial() -> None:
    master, slave = pty.openpty()
    path = os.ttyname(slave)
    stop = threading.Event()

    def device() -> None:
        buf = b""
        while not stop.is_set():
            r, _, _ = select.select([master], [], [], 0.05)
            if not r:
                continue
            buf += os.read(master, 4096)
            *lines, buf = buf.split(b"\n")
            for line in lines:
                os.write(master, b"#ack " + line.strip() + b"\n")

    t = threading.Thread(target=device, daemon=True)
    t.start()
    spec = ActuatorSpec.from_dict({"kind": "serial-command", "url": f"serial://{path}?format=csv",
                                   "timeout": 1.0})
    act = open_actuator(spec)

    def action(i: int) -> None:
        r = act.trip() if i % 2 == 0 else act.reset()
        assert r.ok and r.attempts == 1, r

    _timed(action, 100)
    hot = [_timed(action, 500) for _ in range(RUNS)]
    paced = [_timed(action, 100, pace_s=0.02) for _ in range(RUNS)]
    act.close()
    stop.set()
    t.join(2)
    os.close(master)
    os.close(slave)
    print(f"serial STOP -> #ack over pty, hot loop {_stats(hot)}")
    print(f"serial STOP -> #ack, every 20 ms       {_stats(paced)}")


def bench_command() -> None:
    true = shutil.which("true")
    if true is None:
        print("command hook: no `true` on PATH, skipped")
        return
    act = open_actuator(ActuatorSpec.from_dict({"kind": "command", "argv": [true], "timeout": 5.0}))
    runs = [_timed(lambda i: act.trip(), 100) for _ in range(RUNS)]
    print(f"command hook `true` (spawn + exit 0)   {_stats(runs)}")


def main() -> None:
    bench_modbus()
    bench_serial()
    bench_command()


if __name__ == "__main__":
    main()
