"""Sustained throughput of the real :class:`sensorml.gateway.process.Gateway` fast path, in a child
process pinned to one CPU (its threads inherit the pin, so the recorder's SQLite writer
shares that core). Run by ``bench_gateway``:

    python -m benchmarks._gw_throughput WORK BUNDLE PUBKEY RUNS SECONDS

Prints one JSON line. Variants, each ``RUNS`` times for ``SECONDS``:

- ``direct``: 256-sample blocks pushed straight into ``gateway.fast.on_fast_block``;
- ``pipeline``: a producer thread decodes pre-encoded frames (the serial source's
  ``FrameDecoder`` and block construction) and puts blocks on the gateway's own queue
  (blocking put: the producer waits when the fast path is behind, so nothing is
  dropped and the rate is what the consumer sustains); this thread runs the body of
  ``Gateway.run`` (``q.get`` → ``on_fast_block`` → ``tick``).

Plus a per-stage breakdown (µs per window) of the same objects, and a cProfile top list.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks._gw_setup import FRAME, RATE, healthy
from firmware_bridge.block import Block
from firmware_bridge.codec.frames import FrameDecoder, encode_frame
from sensorml.config import load_config
from sensorml.gateway.process import _FAST, Gateway

CH = ("ax", "ay", "az")


def make_gateway(work: Path, bundle: str, pub: str) -> Gateway:
    cfg = work / "gateway-throughput.toml"
    cfg.write_text(f'''device_id = "bench-throughput"
state_dir = "{work / 'state-throughput'}"
[source]
url = "sim://pump?rate={RATE}"
channels = ["ax", "ay", "az"]
rate = {RATE}
[features]
channels = ["ax", "ay", "az"]
window = 1024
hop = 512
[model]
bundle = "{bundle}"
trusted_keys = ["{pub}"]
[decision]
k = 3
n = 5
[reset]
min_interval = "0s"  # the benchmark resets each round itself
[metrics]
port = 0
''')
    gw = Gateway(load_config(cfg))
    if not gw.slot.load():
        raise SystemExit(f"throughput: model refused: {gw.slot.error}")
    gw.fast = gw._build_fastpath()
    gw.recorder.start()
    return gw


def direct(gw: Gateway, blocks: list[Block], seconds: float) -> tuple[float, float, int]:
    """(samples/s, CPU-s per wall-s, windows) pushing blocks into the fast path."""
    fast = gw.fast
    w0, n, i = fast.windows, 0, 0
    c0, t0 = time.process_time(), time.perf_counter()
    end = t0 + seconds
    nb = len(blocks)
    while True:
        for _ in range(64):
            fast.on_fast_block(blocks[i % nb])
            i += 1
        n += 64
        if time.perf_counter() >= end:
            break
    dt = time.perf_counter() - t0
    return n * FRAME / dt, (time.process_time() - c0) / dt, fast.windows - w0


def pipeline(gw: Gateway, wire: list[bytes], seconds: float) -> tuple[float, float, int]:
    """(samples/s, CPU-s per wall-s, windows) through decode → queue → fast path."""
    fast, q = gw.fast, gw.q
    stop = threading.Event()
    dec = FrameDecoder()

    def produce() -> None:
        i, nw = 0, len(wire)
        while not stop.is_set():
            for fr in dec.feed(wire[i % nw]):
                q.put((_FAST, Block(t0=fr.t0_us * 1e-6, rate=float(RATE), samples=fr.samples,
                                    channels=CH, seq=fr.seq, source="bench",
                                    t_recv=time.perf_counter(), meta={"t0_clock": "device"})))
            i += 1

    w0, n = fast.windows, 0
    c0, t0 = time.process_time(), time.perf_counter()
    th = threading.Thread(target=produce, daemon=True)
    th.start()
    end = t0 + seconds
    get = q.get
    while time.perf_counter() < end:
        kind, item = get(timeout=0.05)
        fast.on_fast_block(item)
        fast.tick()
        n += 1
    stop.set()
    dt = time.perf_counter() - t0
    while True:  # unblock and drain the producer
        try:
            q.get_nowait()
        except Exception:  # noqa: BLE001 - queue.Empty
            if not th.is_alive():
                break
            th.join(0.01)
    return n * FRAME / dt, (time.process_time() - c0) / dt, fast.windows - w0


def stages(gw: Gateway, data: np.ndarray, reps: int = 2000) -> dict[str, float]:
    """µs per window of each stage, on the gateway's own objects."""
    fast, model = gw.fast, gw.slot.live
    w = np.ascontiguousarray(data[:1024])
    out = {}

    def t(fn, n=reps) -> float:
        for _ in range(50):
            fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e6

    x = fast.extractor(w, None)
    blk = Block(t0=0.0, rate=float(RATE), samples=np.ascontiguousarray(data[:FRAME]), channels=CH)
    out["windower.push per 2 blocks (1 window)"] = t(lambda: (fast.windower.push(blk),
                                                              fast.windower.push(blk)))
    out["features"] = t(lambda: fast.extractor(w, None))
    out["score (onnxruntime)"] = t(lambda: model.scorer.score(x))
    out["decide"] = t(lambda: model.decider.update(0.0))
    rec = gw.recorder
    out["record_score + record_raw"] = t(lambda: (rec.record_score(0.0, 0, 0.0, 0, "1", x),
                                                  rec.record_raw(0.0, "sample", CH, RATE, w)), 500)
    wire = encode_frame(1, 0, data[:FRAME])
    dec = FrameDecoder()
    out["frame decode per 2 frames"] = 2 * t(lambda: dec.feed(wire))
    return out


def main(argv: list[str]) -> None:
    work, bundle, pub = Path(argv[0]), argv[1], argv[2]
    runs, seconds = int(argv[3]), float(argv[4])
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})  # one core, before any thread starts
    data = healthy(8.0, seed=31)
    blocks = [Block(t0=i * FRAME / RATE, rate=float(RATE),
                    samples=np.ascontiguousarray(data[i * FRAME:(i + 1) * FRAME]), channels=CH,
                    seq=i, source="bench", t_recv=0.0) for i in range(len(data) // FRAME)]
    wire = [encode_frame(i, int(i * 1e4), b.samples) for i, b in enumerate(blocks)]
    gw = make_gateway(work, bundle, pub)
    res: dict = {"cpu": cpus[-1], "direct": [], "pipeline": []}
    try:
        direct(gw, blocks, 0.5)  # warm-up
        for _ in range(runs):
            res["direct"].append(direct(gw, blocks, seconds))
            res["pipeline"].append(pipeline(gw, wire, seconds))
        gw.recorder.flush(10)
        st = gw.recorder.stats()
        res["recorder"] = {"written": st["written"], "dropped": st["dropped"],
                           "store_dropped": st["store_dropped"],
                           "commit_ms_p99": st["commit_ms"]["p99"]}
        res["queue_drops"] = gw.metrics.queue_drops.value
        res["stages_us"] = stages(gw, data)
        prof = cProfile.Profile()
        prof.enable()
        direct(gw, blocks, 1.0)
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(10)
        res["profile"] = [ln for ln in s.getvalue().splitlines() if ln.strip()][-11:]
    finally:
        gw.recorder.close()
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
