"""Fixtures of the fault suite: real processes (simulator, gateway), a pty device the test
drives byte by byte, buffer checks, and the report of measured figures.

Every scenario records what it measured with ``fault_report.add(scenario, **figures)``:
printed at once (``pytest -s`` shows them) and, when ``SENSORML_FAULT_REPORT`` names a
file, written there as JSON at the end of the session for the README's table.
"""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import sys
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks.soak holds the small model the suite shares
    sys.path.insert(0, str(ROOT))

import gwprocs  # noqa: E402
from gwprocs import Proc, log_json, start_sim  # noqa: E402

from benchmarks.soak import make_bundle  # noqa: E402
from firmware_bridge.codec.frames import encode_frame  # noqa: E402
from sensorml.bundles.bundle import keygen  # noqa: E402

GW_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------ the report
class FaultReport:
    """Figures measured by the scenarios, keyed by scenario name."""

    def __init__(self) -> None:
        self.figures: dict[str, dict] = {}

    def add(self, scenario: str, **figures) -> None:
        self.figures.setdefault(scenario, {}).update(figures)
        print(f"\n[fault figures] {scenario}: {json.dumps(figures, default=str)}", flush=True)

    def write(self) -> None:
        path = os.environ.get("SENSORML_FAULT_REPORT")
        if not path or not self.figures:
            return
        p = Path(path)
        old = {}
        if p.exists():
            try:
                old = json.loads(p.read_text())
            except (OSError, ValueError):
                old = {}
        for k, v in self.figures.items():
            old.setdefault(k, {}).update(v)
        p.write_text(json.dumps(old, indent=2, default=str) + "\n")


@pytest.fixture(scope="session")
def fault_report() -> Iterator[FaultReport]:
    r = FaultReport()
    yield r
    r.write()


def summary(values: list[float], digits: int = 1, scale: float = 1e3) -> dict:
    """min/p50/p95/max of ``values`` (seconds) in ms, rounded."""
    if not values:
        return {"n": 0}
    a = np.asarray(values, float) * scale
    return {"n": len(a), "min": round(float(a.min()), digits),
            "p50": round(float(np.percentile(a, 50)), digits),
            "p95": round(float(np.percentile(a, 95)), digits),
            "max": round(float(a.max()), digits)}


# ------------------------------------------------------------------ keys, model
@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    return keygen(tmp_path_factory.mktemp("fault_keys"))


@pytest.fixture(scope="session")
def bundle(tmp_path_factory, keys) -> Path:
    """A signed z-score bundle for 3 x 25.6 kHz, window 1024, hop 512 (benchmarks.soak)."""
    return make_bundle(tmp_path_factory.mktemp("fault_bundles") / "v1", keys[0])


@pytest.fixture(scope="session")
def bundle_8k(tmp_path_factory, keys) -> Path:
    """The same kind of bundle for 3 x 8 kHz (the pty device of the link tests)."""
    return make_bundle(tmp_path_factory.mktemp("fault_bundles") / "v1_8k", keys[0], rate=8000)


# ------------------------------------------------------------------ processes
def write_config(tmp_path: Path, body: str, name: str = "gateway.toml",
                 state: str = "state") -> Path:
    return gwprocs.write_config(tmp_path, body, device_id="fault-pump", name=name, state=state)


def pump_body(url: str, bundle: Path, pub: Path, *, argv: tuple[str, ...] = ("/bin/true",),
              reset_argv: tuple[str, ...] = (), extra: str = "") -> str:
    """A config body: the source ``url``, the signed bundle, a hard limit on ``ax`` (the
    simulated ``spikes`` fault passes it) and a command hook as the trip; then ``extra``."""
    def toml_list(a: tuple[str, ...]) -> str:
        return json.dumps(list(a))

    reset = f"reset_argv = {toml_list(reset_argv)}\n" if reset_argv else ""
    return (f'[source]\nurl = "{url}"\n[model]\nbundle = "{bundle}"\n'
            f'trusted_keys = ["{pub}"]\n[[limits]]\nchannel = "ax"\nabove = 4.0\n'
            f'[[trip]]\nkind = "command"\nargv = {toml_list(argv)}\n{reset}{extra}')


def start_gateway(cfg: Path, log_name: str = "gateway.log", wait: bool = True) -> Proc:
    """The gateway with one BLAS/OpenMP thread, as on a small gateway board."""
    return gwprocs.start_gateway(cfg, log_name, wait, env=GW_ENV)


# ------------------------------------------------------------------ the buffer
def snapshot(db: Path) -> dict:
    """Ids and counts a reader sees now: ``{table: (count, max id)}`` plus event kinds."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        out = {t: c.execute(f"SELECT count(*), coalesce(max(id), 0) FROM {t}").fetchone()
               for t in ("events", "scores", "raw_windows")}
        out["event_ids"] = {i for (i,) in c.execute("SELECT id FROM events")}
        return out
    finally:
        c.close()


def integrity(db: Path) -> str:
    c = sqlite3.connect(db, timeout=5)
    try:
        return c.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        c.close()


def rows(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


# ------------------------------------------------------------------ a pty device
class PtyDevice:
    """A sensor on a pty this test controls: binary frames at ``rate`` (3 channels,
    ``frame`` samples each) from a pacing thread, reached through the symlink ``link``.

    ``vanish()`` closes the pty and removes the link (a USB sensor unplugged);
    ``come_back()`` opens a new pty and points the link at it. ``pause()``/``resume()``
    stop and restart the data (the last byte's wall time is in ``last_write``).
    ``noise=True`` writes garbage and truncated frames between the frames (counted).
    Commands from the gateway (``STOP``) are acknowledged with an ``ack STOP`` frame.
    """

    def __init__(self, link: Path, rate: int = 8000, frame: int = 256, seed: int = 0) -> None:
        from firmware_bridge.sim.machine import Machine

        self.link, self.rate, self.frame = link, rate, frame
        self.machine = Machine("pump", rate=rate, seed=seed)
        self.rng = np.random.default_rng(seed)
        self.seq = 0
        self.sent = 0  # valid data frames written
        self.junk = 0  # pieces of garbage / truncated frames written
        self.torn = 0  # writes cut short because nobody read the pty
        self.noise = False
        self.last_write = 0.0
        self.commands: list[str] = []
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._quit = threading.Event()
        self.master: int | None = None
        self.slave: int | None = None
        self._open()
        self._t = threading.Thread(target=self._loop, name="pty-device", daemon=True)
        self._t.start()

    def _open(self) -> None:
        m, s = pty.openpty()
        tty.setraw(s)
        tty.setraw(m)
        os.set_blocking(m, False)
        self.master, self.slave = m, s
        tmp = self.link.with_name(self.link.name + ".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(s))
        os.replace(tmp, self.link)

    def start(self) -> PtyDevice:
        self._running.set()
        return self

    def pause(self) -> float:
        """Stop sending; returns the wall time of the last byte written."""
        with self._lock:
            self._running.clear()
            return self.last_write

    def resume(self) -> None:
        self._running.set()

    def vanish(self) -> None:
        with self._lock:
            self._running.clear()
            self.link.unlink(missing_ok=True)
            for fd in (self.master, self.slave):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.master = self.slave = None

    def come_back(self) -> float:
        """A new pty behind the link, data flowing; returns the time it was back."""
        with self._lock:
            self._open()
            self._running.set()
            return time.time()

    def close(self) -> None:
        self._quit.set()
        self._running.set()
        self._t.join(2)
        with self._lock:
            self.link.unlink(missing_ok=True)
            for fd in (self.master, self.slave):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self.master = self.slave = None

    def _garbage(self) -> bytes:
        kind = int(self.rng.integers(3))
        if kind == 0:  # random bytes, ending at a delimiter
            return bytes(self.rng.integers(0, 256, int(self.rng.integers(1, 200)),
                                           dtype=np.uint8)) + b"\x00"
        if kind == 1:  # a truncated frame (cut short, then the delimiter)
            f = encode_frame(999_999, 0, np.zeros((16, 3), np.float32))
            return f[: int(self.rng.integers(1, len(f) - 1))] + b"\x00"
        f = bytearray(encode_frame(999_999, 0, np.ones((16, 3), np.float32)))
        f[int(self.rng.integers(0, len(f) - 1))] ^= 0x5A  # one corrupted byte
        return bytes(f)

    def _write(self, data: bytes) -> bool:
        """Write all of ``data`` to the (non-blocking) master; False if the reader is
        gone for 0.5 s (the piece on the wire is then torn, counted in ``torn``)."""
        import select

        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
            except BlockingIOError:
                n = 0
            except OSError:
                return False
            view = view[n:]
            if view and not select.select([], [self.master], [], 0.5)[1]:
                self.torn += 1
                return False
        return True

    def _loop(self) -> None:
        period = self.frame / self.rate
        next_t = time.monotonic()
        while not self._quit.is_set():
            if not self._running.wait(0.5):
                next_t = time.monotonic()
                continue
            left = next_t - time.monotonic()
            if left > 0 and self._quit.wait(left):
                return
            next_t = max(next_t + period, time.monotonic() - 0.5)
            x = self.machine.generate(self.frame)
            with self._lock:
                if not self._running.is_set() or self.master is None:
                    continue
                data = encode_frame(self.seq, int(time.monotonic() * 1e6), x)
                if self.noise and not self._write(self._garbage()):
                    continue
                if self.noise:
                    self.junk += 1
                if not self._write(data):
                    continue
                self.last_write = time.time()
                self.seq += 1
                self.sent += 1
                self._answer()

    def _answer(self) -> None:
        """Acknowledge STOP/RESET commands (non-blocking read of the master)."""
        import select

        from firmware_bridge.codec.frames import encode_message

        r, _, _ = select.select([self.master], [], [], 0)
        if not r:
            return
        try:
            text = os.read(self.master, 4096).decode("ascii", "replace")
        except OSError:
            return
        for cmd in text.split():
            self.commands.append(cmd)
            self._write(encode_message(f"ack {cmd}"))


@pytest.fixture
def pty_device(tmp_path) -> Iterator[type[PtyDevice]]:
    made: list[PtyDevice] = []

    def make(*args, **kw) -> PtyDevice:
        d = PtyDevice(*args, **kw)
        made.append(d)
        return d

    yield make  # type: ignore[misc]
    for d in made:
        d.close()


def wait_until(pred, timeout: float, what: str, step: float = 0.02):
    """Poll ``pred`` (a read of another process's state) until true; the value or fail."""
    ev = threading.Event()
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        ev.wait(step)


def status(state_dir: Path) -> dict:
    """The running gateway's ``/status`` (control port on 127.0.0.1)."""
    from sensorml.gateway.control import call

    return call(state_dir, "/status")


def reset(state_dir: Path, by: str = "fault suite") -> dict:
    from sensorml.gateway.control import call

    return call(state_dir, "/reset", {"by": by})


class FX:
    """The helpers above, handed to tests as the ``fx`` fixture."""

    write_config = staticmethod(write_config)
    pump_body = staticmethod(pump_body)
    start_gateway = staticmethod(start_gateway)
    start_sim = staticmethod(start_sim)
    log_json = staticmethod(log_json)
    snapshot = staticmethod(snapshot)
    integrity = staticmethod(integrity)
    rows = staticmethod(rows)
    wait_until = staticmethod(wait_until)
    summary = staticmethod(summary)
    status = staticmethod(status)
    reset = staticmethod(reset)
    GW_ENV = GW_ENV
    root = ROOT


@pytest.fixture
def fx() -> type[FX]:
    return FX
