"""Child processes for the demo, the tests and the benchmarks: a process whose output
lines are read by threads into queues, so a caller waits for a line with a deadline
(never a sleep)."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from pathlib import Path

from sensorml.errors import SensormlError


class Proc:
    """A child process whose stdout/stderr lines are read into queues by threads."""

    def __init__(self, argv: list[str], name: str, log: Path, env: dict | None = None) -> None:
        self.name = name
        self.log = log.open("w")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
        self.out: queue.Queue = queue.Queue()
        self.err: queue.Queue = queue.Queue()
        for stream, q in ((self.p.stdout, self.out), (self.p.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, q), daemon=True).start()

    def _pump(self, stream, q: queue.Queue) -> None:
        for line in stream:
            self.log.write(line)
            self.log.flush()
            q.put(line.rstrip("\n"))

    def expect(self, pred, timeout: float, what: str, stream: str = "out") -> str:
        q = self.out if stream == "out" else self.err
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = q.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.p.poll() is not None and q.empty():
                    raise SensormlError(
                        f"{self.name} exited with status {self.p.returncode} before it did "
                        f"{what}; last lines: {self._tail()}") from None
                continue
            if pred(line):
                return line
        raise SensormlError(f"{self.name} did not {what} within {timeout:.0f} s "
                            f"(log: {self.log.name})")

    def _tail(self) -> str:
        self.log.flush()
        try:
            return " | ".join(Path(self.log.name).read_text().strip().splitlines()[-3:])
        except OSError:
            return "(no log)"

    def send(self, line: str) -> None:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
        self.log.close()
