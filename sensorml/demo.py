"""``sensorml demo``: the whole loop on one machine, end to end, in one command.

1. makes a signing key pair;
2. starts the simulated pump as its own process: vibration on a pty (binary frames,
   3 × 25.6 kHz) and process values on Modbus TCP (127.0.0.1, any free port);
3. learns a healthy baseline through the gateway's own sources and features;
4. trains, checks and signs a model bundle (``sensorml train fit``);
5. runs the gateway as its own process, injects a bearing fault into the simulator and
   waits for the trip (serial STOP and the Modbus stop coil), reads it back from the
   simulator, resets, and stops the gateway;
6. writes ``report.html`` (+ ``scores.png``) with the score trace, thresholds and the
   trip and its latency.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from sensorml.errors import SensormlError

ROOT = Path(__file__).resolve().parent.parent


def _step(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


class Proc:
    """A child process whose stdout/stderr lines are read into queues by threads."""

    def __init__(self, argv: list[str], name: str, log: Path) -> None:
        self.name = name
        self.log = log.open("w")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1)
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


def _sim_status(sim: Proc) -> str:
    while not sim.out.empty():
        sim.out.get_nowait()
    sim.send("status")
    return sim.expect(lambda s: s.startswith("ok status"), 5, "answer status")


def write_config(work: Path, pty: str, modbus: str, map_path: Path, bundle: Path | None) -> Path:
    model = ""
    if bundle is not None:
        model = f'''
[model]
bundle = "{bundle}"
trusted_keys = ["{work / 'keys' / 'signing.pub'}"]
'''
    text = f'''# written by `sensorml demo`
device_id = "demo-pump"
state_dir = "{work / 'state'}"

[source]
url = "serial://{pty}?format=frames"
channels = ["ax", "ay", "az"]
rate = 25600

[[slow_sources]]
url = "modbus-tcp://{modbus}?rate=10"
map = "{map_path}"

[features]
window = 1024
hop = 512
envelope = true
{model}
[decision]
k = 3
n = 5

[[limits]]
channel = "temperature_c"
above = 90.0

[watchdog]
timeout = "500ms"
on_silence = "trip"

[[trip]]
kind = "serial-command"
url = "serial://{pty}"

[[trip]]
kind = "modbus-coil"
url = "modbus-tcp://{modbus}"
address = 0

[buffer]
path = "{work / 'state' / 'buffer.db'}"

[metrics]
port = 0
'''
    path = work / "gateway.toml"
    path.write_text(text)
    return path


def run_demo(work: Path, *, fault: str = "outer_race", learn_s: float = 40.0,
             quick: bool = False) -> int:
    from sensorml.config import load_config
    from sensorml.learn import learn

    t_start = time.monotonic()
    work = work.resolve()
    (work / "state").mkdir(parents=True, exist_ok=True)
    for f in ("state/buffer.db", "state/buffer.db-wal", "state/buffer.db-shm"):
        (work / f).unlink(missing_ok=True)
    py = sys.executable
    map_path = ROOT / "data" / "maps" / "sim_pump.toml"
    if not map_path.exists():
        from firmware_bridge.sim import modbus_device

        map_path = Path(modbus_device.__file__).parent / "sim_pump.toml"

    _step("1/6 key pair for signing bundles")
    from sensorml.bundle import keygen

    keygen(work / "keys")

    _step("2/6 starting the simulated pump (pty + Modbus TCP)")
    sim = Proc([py, "-m", "firmware_bridge.sim.cli", "--serial", "--format", "frames",
                "--rate", "25600", "--modbus-tcp", "127.0.0.1:0", "--seed", "7"],
               "simulator", work / "simulator.log")
    procs = [sim]
    try:
        pty = modbus = None
        while pty is None or modbus is None:
            line = sim.expect(lambda s: s.startswith(("serial:", "modbus-tcp:", "ready")), 20,
                              "print its endpoints")
            if line.startswith("serial:"):
                pty = line.split()[1]
            elif line.startswith("modbus-tcp:"):
                modbus = line.split()[1]
            elif line == "ready":
                break
        _step(f"    vibration on {pty}, process values on modbus-tcp://{modbus}")

        learn_cfg = write_config(work, pty, modbus, map_path, None)
        secs = 8.0 if quick else learn_s
        _step(f"3/6 learning a healthy baseline for {secs:.0f} s")
        npz = work / "healthy.npz"
        rows = learn(load_config(learn_cfg), npz, duration_s=secs, progress=True)
        _step(f"    {rows} healthy windows")

        _step("4/6 training, checking and signing the model")
        bundle = work / "bundles" / "v1"
        r = subprocess.run([py, "-m", "training.cli", "fit", "--features", str(npz),
                            "--model", "iforest", "--out", str(bundle), "--key",
                            str(work / "keys" / "signing.key"), "--name", "demo-pump",
                            "--version", "1"], capture_output=True, text=True)
        if r.returncode != 0:
            raise SensormlError(f"demo: training failed: {r.stderr.strip() or r.stdout.strip()}")
        for line in r.stdout.strip().splitlines():
            _step("    " + line)

        cfg_path = write_config(work, pty, modbus, map_path, bundle)
        _step("5/6 running the gateway")
        gw = Proc([py, "-m", "sensorml.cli", "gateway", "--config", str(cfg_path)],
                  "gateway", work / "gateway.log")
        procs.append(gw)
        gw.expect(lambda s: "running" in s, 30, "start")
        healthy_s = 4.0 if quick else 10.0
        _step(f"    healthy for {healthy_s:.0f} s (no trip expected)")
        try:
            gw.expect(lambda s: "TRIP" in s, healthy_s, "trip", stream="err")
            raise SensormlError("demo: the gateway tripped on a healthy machine; see gateway.log")
        except SensormlError as e:
            if "healthy" in str(e):
                raise
        _step(f"    injecting fault {fault!r} (severity ramps up over 5 s)")
        t_fault = time.monotonic()
        sim.send(f"fault {fault} 1.0 5s")
        trip_line = gw.expect(lambda s: "TRIP" in s, 60, "trip on the fault", stream="err")
        t_trip = time.monotonic()
        msg = json.loads(trip_line)["msg"] if trip_line.startswith("{") else trip_line
        _step(f"    {msg} ({t_trip - t_fault:.1f} s after the fault began)")
        status = _sim_status(sim)
        _step(f"    simulator: {status[len('ok status '):][:90]}")
        from sensorml.config import load_config as _lc
        from sensorml.control import call

        st = call(_lc(cfg_path).state_dir, "/status")
        _step(f"    gateway latched: tripped={st['tripped']}")
        sim.send(f"clear {fault}")
        r = call(_lc(cfg_path).state_dir, "/reset", {"by": "demo"})
        _step(f"    reset: {r['detail']}")
        gw.stop()
        procs.remove(gw)

        _step("6/6 report")
        report = write_report(work, cfg_path)
        _step(f"    {report}")
    finally:
        for p in procs:
            p.stop()
        try:
            sim.send("quit")
        except (BrokenPipeError, ValueError, OSError):
            pass
    _step(f"done in {time.monotonic() - t_start:.0f} s")
    return 0


def write_report(work: Path, cfg_path: Path) -> Path:
    """Score trace with thresholds and the trip, from the gateway's own buffer."""
    db = sqlite3.connect(f"file:{work / 'state' / 'buffer.db'}?mode=ro", uri=True)
    scores = db.execute("SELECT t, score, verdict FROM scores ORDER BY id").fetchall()
    trips = [json.loads(d) | {"t": t} for t, d in
             db.execute("SELECT t, detail FROM events WHERE kind='trip' ORDER BY id")]
    db.close()
    man = json.loads((work / "bundles" / "v1" / "manifest.json").read_text())
    th = man["thresholds"]
    png = work / "scores.png"
    plotted = False
    if scores:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            t0 = scores[0][0]
            fig, ax = plt.subplots(figsize=(10, 4))
            ax.plot([s[0] - t0 for s in scores], [s[1] for s in scores], lw=0.8, label="score")
            for name, color in (("warn", "gold"), ("alarm", "orange"), ("trip", "red")):
                ax.axhline(th[name], color=color, ls="--", lw=1, label=f"{name} {th[name]:.3g}")
            for tr in trips:
                ax.axvline(tr["t"] - t0, color="k", lw=1.5, label="trip")
            ax.set_xlabel("seconds since the gateway started")
            ax.set_ylabel("anomaly score (higher = worse)")
            ax.legend(loc="upper left", fontsize=8)
            fig.tight_layout()
            fig.savefig(png, dpi=100)
            plt.close(fig)
            plotted = True
        except ImportError:
            pass
    rows = "".join(
        f"<tr><td>{tr.get('cause')}</td><td>{tr.get('reason', '')}</td>"
        f"<td>{tr.get('sample_to_trip_ms') or 0:.3f} ms</td>"
        f"<td>{', '.join(str(round(a['latency_ms'], 3)) + ' ms' for a in tr.get('actions', []))}</td></tr>"
        for tr in trips)
    html = f"""<!doctype html><meta charset="utf-8"><title>sensorml demo report</title>
<h1>sensorml demo</h1>
<p>{len(scores)} windows scored by model {man['name']} {man['version']}
({man['model_family']}, {man['n_features']} features).
Thresholds: warn {th['warn']:.4g}, alarm {th['alarm']:.4g}, trip {th['trip']:.4g}
({man['threshold_method']}).</p>
{'<img src="scores.png" alt="scores">' if plotted else '<p>(matplotlib not installed: no plot)</p>'}
<h2>Trips</h2><table border=1 cellpadding=4>
<tr><th>cause</th><th>reason</th><th>sample-to-trip</th><th>actions</th></tr>{rows}</table>
<p>Config: {cfg_path}</p>
"""
    out = work / "report.html"
    out.write_text(html)
    for tr in trips:
        _step(f"    trip: {tr.get('cause')} — {tr.get('reason', '')}; sample-to-trip "
              f"{tr.get('sample_to_trip_ms') or 0:.3f} ms")
    return out
