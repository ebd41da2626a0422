"""Set-up for ``bench_gateway``: a bundle trained on simulated healthy windows, gateway
configs, child processes (logs to files, no pipe threads), and psutil/proc figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.sim.machine import Machine
from sensorml.edge.features import FeatureExtractor, FeatureSpec

ROOT = Path(__file__).resolve().parent.parent
RATE = 25600
FRAME = 256
SPEC = dict(channels=["ax", "ay", "az"], sample_rate=RATE, window=1024, hop=512)


def healthy(seconds: float, seed: int) -> np.ndarray:
    """Healthy simulated pump vibration, float32 [n, 3] (a few speed/load changes)."""
    from firmware_bridge.sim.schedule import SetPoint

    sched = (SetPoint(0.0, rpm=2970, load=0.75), SetPoint(10, rpm=2800, load=0.6, ramp_s=3),
             SetPoint(25, rpm=2950, load=0.9, ramp_s=3), SetPoint(45, rpm=2970, load=0.75,
                                                                  ramp_s=3))
    return Machine("pump", rate=RATE, seed=seed, schedule=sched).generate(int(seconds * RATE))


def faulty_frame(x: np.ndarray, marker: float) -> np.ndarray:
    """A clearly faulty 256-sample frame: ±8 g impacts every 16 samples on every axis, and
    the last 16 rows set to ``marker`` (a float32 whose bytes hold no zero, so a reader can
    find it in the COBS stream without decoding)."""
    f = x.copy()
    f[::16] += np.float32(8.0)
    f[8::16] -= np.float32(8.0)
    f[-16:] = np.float32(marker)
    return f


MARKER = 7.654321
MARKER_BYTES = np.full(8, MARKER, np.float32).tobytes()  # 32 bytes; searched as 12


@dataclass
class Bundle:
    path: Path
    pub: Path
    thresholds: dict
    healthy_max: float
    faulty_score: float
    fit_s: float


def make_bundle(work: Path) -> Bundle:
    """Train, export and sign an IsolationForest on 70 s of healthy windows (as the e2e
    tests do); score a healthy and a faulty window with the bundle to show the margin."""
    from sensorml.bundles.bundle import keygen, load_bundle
    from sensorml.edge.scorer import Scorer
    from training.fit import FeatureTable, fit_bundle

    t = time.perf_counter()
    spec = FeatureSpec.from_dict(dict(SPEC))
    ext = FeatureExtractor(spec)
    x = healthy(70.0, seed=11)
    rows = [ext(x[i:i + spec.window]) for i in range(0, len(x) - spec.window + 1, spec.hop)]
    priv, pub = keygen(work / "keys")
    out = work / "bundle"
    fit_bundle(FeatureTable(np.vstack(rows).astype(np.float32), spec.names(), spec.to_dict()),
               out=out, key=priv, name="bench-pump", version="1")
    fit_s = time.perf_counter() - t
    b = load_bundle(out, trusted_keys=[str(pub)])
    sc = Scorer(b)
    y = healthy(20.0, seed=23)  # another seed: what the benchmark's device streams
    hs = [sc.score(ext(y[i:i + 1024])) for i in range(0, len(y) - 1024, 512)]
    w = y[:1024].copy()
    w[-FRAME:] = faulty_frame(w[-FRAME:], MARKER)
    return Bundle(out, pub, dict(b.manifest.thresholds), float(max(hs)), sc.score(ext(w)), fit_s)


def trip_decision(bundle: Bundle) -> str:
    """``[decision]`` for the latency runs: trip on one window; if the healthy stream's
    highest score comes near the bundle's trip threshold, raise the threshold to halfway
    between it and the faulty window's score (no false trips in the timed runs)."""
    text = 'k = 1\nn = 1\nstartup_inhibit = "0s"'
    if bundle.healthy_max > 0.8 * bundle.thresholds["trip"]:
        text += f"\ntrip = {(bundle.healthy_max + bundle.faulty_score) / 2:.6f}"
    return text


def gateway_toml(work: Path, name: str, pty: str, bundle: Bundle, trip: str,
                 decision: str | None = None) -> Path:
    """A gateway.toml for a serial frames source on ``pty`` with the given [[trip]] body."""
    decision = trip_decision(bundle) if decision is None else decision
    state = work / f"state-{name}"
    text = f'''device_id = "bench-{name}"
state_dir = "{state}"
[source]
url = "serial://{pty}?format=frames"
channels = ["ax", "ay", "az"]
rate = {RATE}
[features]
window = 1024
hop = 512
[model]
bundle = "{bundle.path}"
trusted_keys = ["{bundle.pub}"]
[decision]
{decision}
[[trip]]
{trip}
[reset]
min_interval = "0s"  # the benchmark resets each round itself
[metrics]
port = 0
'''
    p = work / f"gateway-{name}.toml"
    p.write_text(text)
    return p


#: nice value for the processes of the timed runs (gateway, floor, device thread, throughput
#: child); 0 = normal priority. Set by ``bench_gateway.main`` (``--no-nice`` keeps 0).
PRIORITY = {"nice": 0}


def raise_priority(tid: int | None = None) -> bool:
    """Give this thread (Linux: nice is per thread) the configured nice value."""
    n = PRIORITY["nice"]
    if not n:
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, tid or threading.get_native_id(), n)
        return True
    except OSError:
        return False


def can_raise_priority() -> bool:
    """True if a child can be started at a negative nice (root or CAP_SYS_NICE)."""
    r = subprocess.run(["nice", "-n", "-10", "true"], capture_output=True, timeout=10)
    return r.returncode == 0 and not r.stderr


def nice_argv(argv: list[str]) -> list[str]:
    n = PRIORITY["nice"]
    return ["nice", "-n", str(n), *argv] if n else argv


class Child:
    """A child process whose stdout/stderr go to files (no reader threads in our process,
    so nothing competes with the device loop for the GIL); ``wait_for`` polls the files."""

    def __init__(self, argv: list[str], name: str, work: Path, stdin: bool = False,
                 priority: bool = False) -> None:
        self.name = name
        argv = nice_argv(argv) if priority else argv
        self.out_path, self.err_path = work / f"{name}.out", work / f"{name}.err"
        self._out, self._err = self.out_path.open("wb"), self.err_path.open("wb")
        self.p = subprocess.Popen(argv, stdout=self._out, stderr=self._err, cwd=ROOT,
                                  stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.p.pid

    def text(self, stream: str = "out") -> str:
        p = self.out_path if stream == "out" else self.err_path
        return p.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float, stream: str = "out") -> str:
        """The first line of ``stream`` containing ``needle``; RuntimeError on exit/timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.text(stream).splitlines():
                if needle in line:
                    return line
            if self.p.poll() is not None:
                break
            time.sleep(0.02)  # polling a log file for a child's start-up line
        tail = " | ".join(self.text("err").strip().splitlines()[-3:])
        raise RuntimeError(f"{self.name}: no {needle!r} within {timeout:.0f} s "
                           f"(exit {self.p.poll()}); stderr: {tail}")

    def stop(self) -> None:
        if self.p.poll() is None:
            if self.p.stdin:
                try:
                    self.p.stdin.close()
                except OSError:
                    pass
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self._out.close()
        self._err.close()


def start_gateway(cfg: Path, name: str, work: Path, trace: bool = False,
                  priority: bool = True) -> Child:
    """``sensorml gateway --config cfg`` (``trace``: with the stage timers of _gw_trace;
    ``priority``: at the nice value of the timed runs)."""
    argv = ["-m", "benchmarks._gw_trace", str(cfg)] if trace else \
        ["-m", "sensorml.cli", "gateway", "--config", str(cfg)]
    gw = Child([sys.executable, *argv], name, work, priority=priority)
    gw.wait_for("running", 60)
    gw.wait_for("open at", 20, stream="err")  # the serial source holds the port
    return gw


def control(state_dir: Path, path: str, body: dict | None = None) -> dict:
    from sensorml.gateway.client import call

    return call(state_dir, path, body, timeout=5.0)


def vm(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak) of a process in bytes, from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) * 1024
    return out


FLOOR_MEM = """
import sys
import numpy, onnxruntime as ort
sess = ort.InferenceSession(open(sys.argv[1], 'rb').read(), providers=['CPUExecutionProvider'])
x = numpy.zeros((1, sess.get_inputs()[0].shape[1]), numpy.float32)
sess.run(None, {sess.get_inputs()[0].name: x})
print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])
"""


def floor_rss(bundle: Bundle) -> int:
    """Peak RSS of a process that only imports numpy + onnxruntime and runs the model."""
    r = subprocess.run([sys.executable, "-c", FLOOR_MEM, str(bundle.path / "model.onnx")],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    if r.returncode:
        raise RuntimeError(f"memory floor process failed: {r.stderr.strip()[-300:]}")
    return int(r.stdout.strip()) * 1024


MEM_STEPS = """
import sys
def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) * 1024
steps = [('python', rss())]
for label, mods in [('numpy + onnxruntime', 'numpy onnxruntime'),
                    ('http.server (loads ssl/libssl)', 'http.server'),
                    ('cryptography (bundle signatures)', 'sensorml.bundles.signing'),
                    ('sqlite3 + recorder', 'sensorml.buffer.recorder'),
                    ('pyserial + rest of the gateway', 'serial sensorml.gateway.process sensorml.bundles.bundle '
                     'sensorml.gateway.control sensorml.edge.scorer firmware_bridge.actuators '
                     'firmware_bridge.sources.serial firmware_bridge.actuators.serial')]:
    for m in mods.split():
        __import__(m)
    steps.append((label, rss()))
print(repr(steps))
"""


def import_rss() -> list[tuple[str, int]]:
    """RSS added by each group of the gateway's imports, in import order (bytes)."""
    import ast

    r = subprocess.run([sys.executable, "-c", MEM_STEPS], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    if r.returncode:
        return []
    steps = ast.literal_eval(r.stdout.strip())
    return [(label, b - a) for (_, a), (label, b) in zip(steps, steps[1:])]


def pct(a, q: float) -> float:
    return float(np.percentile(np.asarray(a, float), q)) if len(a) else float("nan")


def status(state_dir: Path) -> dict:
    return control(state_dir, "/status")


def dump(d: dict) -> str:
    return json.dumps(d, default=str)


def env_long(argv: list[str] | None) -> bool:
    return bool((argv and "--long" in argv) or os.environ.get("BENCH_LONG") == "1")
