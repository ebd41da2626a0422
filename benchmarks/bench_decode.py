"""Serial decoding throughput: binary frames and CSV lines, decoder alone and end to end
through a real pty into :class:`~firmware_bridge.sources.serial.SerialSource`.

Targets (one core): frames ≥ 5 M samples/s, CSV ≥ 500 k lines/s. Each figure is the
median of 5 runs. Run: ``.venv/bin/python -m benchmarks decode``.
"""

from __future__ import annotations

import os
import pty
import statistics
import threading
import time
import tty

import numpy as np

from firmware_bridge.codec.csvlines import CsvDecoder, encode_csv
from firmware_bridge.codec.frames import FrameDecoder, encode_frame
from firmware_bridge.sources.serial import SerialSource

RUNS = 5
CHUNK = 65536  # bytes per feed() in the pure runs (a large serial read)
FRAME_TARGET = 5e6
CSV_TARGET = 5e5


def frame_stream(n_frames: int, rows: int = 256, ch: int = 3, kind: str = "normal") -> bytes:
    """``normal``: random f32; ``zeros``: all 0.0 f32; ``small``: i16 in 1..255 (a 0x00
    every other byte, the worst case of COBS: one code block per sample)."""
    rng = np.random.default_rng(0)
    parts = []
    for i in range(n_frames):
        if kind == "small":
            x = rng.integers(1, 256, size=(rows, ch)).astype(np.int16)
            parts.append(encode_frame(i, i * 10_000, x, dtype="i16"))
            continue
        x = np.zeros((rows, ch), np.float32) if kind == "zeros" else rng.normal(size=(rows, ch)).astype(np.float32)
        parts.append(encode_frame(i, i * 10_000, x))
    return b"".join(parts)


def csv_stream(n_lines: int, ch: int = 3) -> bytes:
    x = np.random.default_rng(0).normal(size=(n_lines, ch)).astype(np.float32)
    return encode_csv(x, [f"c{i}" for i in range(ch)])


def pure_frames(stream: bytes) -> tuple[float, int]:
    dec = FrameDecoder()
    n = 0
    t = time.perf_counter()
    for i in range(0, len(stream), CHUNK):
        for f in dec.feed(stream[i : i + CHUNK]):
            n += f.samples.shape[0] * f.samples.shape[1]
    return time.perf_counter() - t, n


def pure_csv(stream: bytes) -> tuple[float, int]:
    dec = CsvDecoder()
    n = 0
    t = time.perf_counter()
    for i in range(0, len(stream), CHUNK):
        rows, _ = dec.feed(stream[i : i + CHUNK])
        n += rows.shape[0]
    return time.perf_counter() - t, n


def through_pty(stream: bytes, fmt: str, expected_rows: int) -> tuple[float, int]:
    """Write ``stream`` into a pty master; time until SerialSource delivered every row."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    done = threading.Event()
    opened = threading.Event()
    got = [0]

    def on_block(block) -> None:
        got[0] += block.n
        if got[0] >= expected_rows:
            done.set()

    def on_event(ev) -> None:
        if ev.kind == "info" and "open" in ev.message:
            opened.set()

    src = SerialSource(f"serial://{os.ttyname(slave)}?format={fmt}", on_block, on_event,
                       block_samples=4096)
    src.start()
    try:
        opened.wait(5.0)
        t = time.perf_counter()
        view = memoryview(stream)
        while view:
            view = view[os.write(master, view[:CHUNK]) :]
        done.wait(60.0)
        elapsed = time.perf_counter() - t
    finally:
        src.stop()
        os.close(master)
        os.close(slave)
    return elapsed, got[0]


def median_rate(fn, *args) -> tuple[float, int]:
    rates, count = [], 0
    for _ in range(RUNS):
        elapsed, count = fn(*args)
        rates.append(count / elapsed)
    return statistics.median(rates), count


def verdict(value: float, target: float) -> str:
    return f"{'meets' if value >= target else 'BELOW'} target {target / 1e6:g} M"


def main() -> None:
    frames = frame_stream(2000)
    rate, n = median_rate(pure_frames, frames)
    print(f"frames decoder, 256x3 f32 frames:       {rate / 1e6:7.1f} M samples/s "
          f"({n} samples, {len(frames) / 1e6:.1f} MB)  {verdict(rate, FRAME_TARGET)}")
    rate_z, _ = median_rate(pure_frames, frame_stream(200, kind="zeros"))
    print(f"frames decoder, all-zero f32 samples:   {rate_z / 1e6:7.1f} M samples/s")
    rate_s, _ = median_rate(pure_frames, frame_stream(200, kind="small"))
    print(f"frames decoder, i16 in 1..255 (COBS worst case, a block per sample): "
          f"{rate_s / 1e6:.1f} M samples/s")
    rate_p, n = median_rate(through_pty, frames, "frames", 2000 * 256)
    print(f"frames end to end through a pty:        {rate_p * 3 / 1e6:7.1f} M samples/s "
          f"({rate_p / 1e3:.0f} k rows/s)  {verdict(rate_p * 3, FRAME_TARGET)}")

    lines = csv_stream(200_000)
    rate, n = median_rate(pure_csv, lines)
    print(f"CSV decoder, 3 channels:                {rate / 1e3:7.0f} k lines/s "
          f"({n} lines)  {verdict(rate, CSV_TARGET)}")
    rate_p, n = median_rate(through_pty, lines, "csv", 200_000)
    print(f"CSV end to end through a pty:           {rate_p / 1e3:7.0f} k lines/s  "
          f"{verdict(rate_p, CSV_TARGET)}")


if __name__ == "__main__":
    main()
