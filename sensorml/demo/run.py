"""``sensorml demo``: the whole loop on one machine, end to end, in one command.

 1. a signing key pair;
 2. the simulated pump as its own process: vibration on a pty (binary frames,
    3 × 25.6 kHz), process values on Modbus TCP (127.0.0.1, a free port); it enforces
    the gateway's heartbeat (stops itself when coil 1 stops changing for 3 s);
 3. a healthy baseline learnt through the gateway's own sources and features;
 4. model v1 trained, checked against scikit-learn and signed;
 5. v1 published to the cloud store (``file://<workdir>/cloud``) and named in the fleet's
    signed desired-state file; the sync job installs it on the gateway;
 6. the gateway runs; a bearing fault is injected; it trips the pump (serial STOP and the
    Modbus stop coil); an operator labels the trip a true fault and resets;
 7. the sync job uploads what the gateway saw (events, scores, features, raw windows
    around the alarm, the label) to the store;
 8. v2 is retrained from the synced data, without the labelled fault, and published;
 9. the sync job stages v2; the gateway runs it in shadow beside v1, then promotes it;
10. ``report.html`` with the timeline, the score trace, thresholds and the trip.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from sensorml.demo.procs import Proc
from sensorml.errors import SensormlError

__all__ = ["Proc", "run_demo", "write_config"]

FLEET = "demo"
DEVICE = "demo-pump"


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.rows: list[tuple[float, str]] = []

    def step(self, msg: str) -> None:
        self.rows.append((time.monotonic() - self.t0, msg))
        print(f"[demo {time.monotonic() - self.t0:6.1f} s] {msg}", flush=True)


def _run(tl: Timeline, what: str, argv: list[str]) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise SensormlError(f"demo: {what} failed: {(r.stderr or r.stdout).strip()[-800:]}")
    return r.stdout


def _sim_status(sim: Proc) -> str:
    while not sim.out.empty():
        sim.out.get_nowait()
    sim.send("status")
    return sim.expect(lambda s: s.startswith("ok status"), 5, "answer status")[10:]


def write_config(work: Path, pty: str, modbus: str, map_path: Path, *, model: bool) -> Path:
    state = work / "state"
    model_part = f'''
[model]
bundle = "{state / 'bundles' / 'current'}"
trusted_keys = ["{work / 'keys' / 'signing.pub'}"]
watch = "200ms"
''' if model else ""
    text = f'''# written by `sensorml demo`
device_id = "{DEVICE}"
state_dir = "{state}"

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
{model_part}
[decision]
k = 3
n = 5
startup_inhibit = "5s"

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

# the simulated pump stops itself when this stops for 3 s (simulate --heartbeat-timeout)
[heartbeat]
kind = "modbus-coil"
url = "modbus-tcp://{modbus}"
address = 1
period = "500ms"

[buffer]
path = "{state / 'buffer.db'}"

[sync]
store = "file://{work / 'cloud'}"

[deploy]
fleet = "{FLEET}"
shadow_windows = 250

[metrics]
port = 0
'''
    path = work / ("gateway.toml" if model else "learn.toml")
    path.write_text(text)
    return path


def _fresh(work: Path) -> None:
    import shutil

    for sub in ("state", "cloud", "bundles"):
        shutil.rmtree(work / sub, ignore_errors=True)
    (work / "state").mkdir(parents=True, exist_ok=True)


#: import names of the [train] extra, which the demo's training steps run on
TRAIN_EXTRA = ("sklearn", "skl2onnx", "onnx", "scipy", "pyarrow")


def _check_train_extra() -> None:
    """Refuse before anything starts (not with a child's traceback at step 4)."""
    from importlib.util import find_spec

    missing = [m for m in TRAIN_EXTRA if find_spec(m) is None]
    if missing:
        raise SensormlError(f"the demo trains models: it needs the [train] extra "
                            f"({', '.join(missing)} not installed): pip install 'sensorml[train]'")


def run_demo(work: Path, *, fault: str = "outer_race", learn_s: float = 40.0,
             quick: bool = False) -> int:
    _check_train_extra()
    from firmware_bridge.sim.modbus_device import DEFAULT_MAP
    from sensorml.bundles.bundle import keygen
    from sensorml.config import load_config
    from sensorml.gateway.client import call, command
    from sensorml.gateway.learn import learn

    tl = Timeline()
    work = work.resolve()
    _fresh(work)
    py = sys.executable
    map_path = work / DEFAULT_MAP.name  # the simulator's own map, for the gateway's config
    map_path.write_bytes(DEFAULT_MAP.read_bytes())
    store = f"file://{work / 'cloud'}"
    key = work / "keys" / "signing.key"

    tl.step("1/10 key pair for signing bundles and desired-state files")
    if not key.exists():
        keygen(work / "keys")

    tl.step("2/10 starting the simulated pump (pty + Modbus TCP)")
    sim = Proc([py, "-m", "firmware_bridge.sim.cli", "--serial", "--format", "frames",
                "--rate", "25600", "--modbus-tcp", "127.0.0.1:0", "--seed", "7",
                "--heartbeat-timeout", "3s"],
               "simulator", work / "simulator.log")
    procs = [sim]
    try:
        ends: dict[str, str] = {}
        while True:
            line = sim.expect(lambda s: s.split(":")[0] in ("serial", "modbus-tcp", "ready"),
                              20, "print its endpoints")
            if line == "ready":
                break
            kind, rest = line.split(":", 1)
            ends[kind] = rest.split()[0]
        pty, modbus = ends["serial"], ends["modbus-tcp"]
        tl.step(f"     vibration on {pty}, process values on modbus-tcp://{modbus}; it stops "
                "itself when the gateway's heartbeat (coil 1) stops for 3 s")

        secs = 10.0 if quick else learn_s
        tl.step(f"3/10 learning a healthy baseline for {secs:.0f} s")
        npz = work / "healthy.npz"
        rows = learn(load_config(write_config(work, pty, modbus, map_path, model=False)), npz,
                     duration_s=secs, progress=sys.stderr.isatty())
        tl.step(f"     {rows} healthy windows")

        tl.step("4/10 training model v1, checking it against scikit-learn, signing it")
        v1 = work / "bundles" / "v1"
        out = _run(tl, "training v1", [py, "-m", "training.cli", "--quiet", "fit", "--features",
                                       str(npz), "--out", str(v1), "--key",
                                       str(key), "--name", DEVICE, "--version", "1"])
        for line in out.strip().splitlines():
            tl.step("     " + line)

        tl.step(f"5/10 publishing v1 to {store} and naming it in desired/{FLEET}.json")
        _publish(tl, py, v1, store, key, "1")
        cfg_path = write_config(work, pty, modbus, map_path, model=True)

        tl.step("6/10 running the gateway (no model yet: hard limits and watchdog only)")
        gw = Proc([py, "-m", "sensorml.cli", "gateway", "--config", str(cfg_path)],
                  "gateway", work / "gateway.log")
        procs.append(gw)
        gw.expect(lambda s: "running" in s, 30, "start")
        _run(tl, "sync (install v1)", [py, "-m", "sensorml.cli", "sync", "--config",
                                       str(cfg_path), "--once", "--log-format", "text"])
        msg = _wait_log(gw, f"model {DEVICE} 1 loaded", 20)
        if not msg:
            raise SensormlError("demo: the gateway did not load v1; see gateway.log")
        tl.step(f"     sync verified and installed v1; gateway: {msg}")
        gw_cfg = load_config(cfg_path)
        state = gw_cfg.state_dir
        healthy_s = 6.0 if quick else 10.0
        tl.step(f"     healthy for {healthy_s:.0f} s: no trip expected")
        if _wait_log(gw, "TRIP", healthy_s):
            raise SensormlError("demo: the gateway tripped on a healthy machine; see gateway.log")
        tl.step(f"     injecting fault {fault!r} (severity ramps up over 5 s)")
        t_fault = time.monotonic()
        sim.send(f"fault {fault} 1.0 5s")
        msg = _wait_log(gw, "TRIP", 60)
        if not msg:
            raise SensormlError(f"demo: no trip within 60 s of the {fault} fault; see gateway.log")
        tl.step(f"     {msg} ({time.monotonic() - t_fault:.1f} s after the fault began)")
        tl.step(f"     simulator: {_sim_status(sim)[:70]}")
        trip_id = _last_event_id(state / "buffer.db", "trip")
        _run(tl, "label", [py, "-m", "sensorml.cli", "label", "--config", str(cfg_path),
                           "--event", str(trip_id), "--verdict", "true_fault", "--note",
                           f"{fault} confirmed at inspection", "--by", "demo"])
        tl.step(f"     operator labels trip #{trip_id} a true fault; bearing replaced; reset")
        sim.send(f"clear {fault}")
        r = command(gw_cfg.control.socket, "/reset", {"note": f"demo: {fault} cleared"})
        tl.step(f"     reset: {r['detail']}")
        after_s = 8.0 if quick else 15.0
        tl.step(f"     running healthy again for {after_s:.0f} s")
        _wait_log(gw, "TRIP", after_s)

        tl.step(f"7/10 sync: uploading what the gateway saw to {store}")
        out = _run(tl, "sync (upload)", [py, "-m", "sensorml.cli", "sync", "--config",
                                         str(cfg_path), "--once", "--log-format", "text"])
        tl.step("     " + _sync_summary(out))

        tl.step("8/10 retraining v2 from the synced data and the label, publishing it")
        v2 = work / "bundles" / "v2"
        out = _run(tl, "training v2", [py, "-m", "training.cli", "fit", "--ingest", store,
                                       "--device", DEVICE, "--spec", str(v1),
                                       "--out", str(v2), "--key", str(key),
                                       "--name", DEVICE, "--version", "2"])
        tl.step("     " + out.strip().splitlines()[0])
        _publish(tl, py, v2, store, key, "2")

        tl.step("9/10 sync: the gateway stages v2 and runs it in shadow beside v1")
        _run(tl, "sync (stage v2)", [py, "-m", "sensorml.cli", "sync", "--config",
                                     str(cfg_path), "--once", "--log-format", "text"])
        msg = _wait_log(gw, "in shadow", 20)
        tl.step(f"     {msg or 'v2 not taken into shadow (see gateway.log)'}")
        msg = _wait_log(gw, ("promoted", "rolled back"), 60)
        tl.step(f"     {msg or 'no verdict on v2 within 60 s (see gateway.log)'}")
        _wait_log(gw, "TRIP", 3.0)  # a few seconds of the new live model for the report
        st = call(state, "/status")
        tl.step(f"     live model: {st['model']['name']} {st['model']['version']}, "
                f"tripped={st['tripped']}")
        gw.stop()
        procs.remove(gw)

        tl.step("10/10 report")
        from sensorml.demo.report import write_report

        report = write_report(work, tl.rows)
        tl.step(f"     {report}")
    finally:
        for p in procs:
            if p is sim:
                try:
                    sim.send("quit")
                except (BrokenPipeError, ValueError, OSError):
                    pass
            p.stop()
    tl.step(f"done in {time.monotonic() - tl.t0:.0f} s")
    return 0


def _publish(tl: Timeline, py: str, bundle: Path, store: str, key: Path, version: str) -> None:
    _run(tl, f"publish v{version}", [py, "-m", "training.cli", "--quiet", "publish", str(bundle),
                                     "--store", store, "--key", str(key)])
    _run(tl, f"desired v{version}", [py, "-m", "sensorml.cli", "desired", "--store", store, "--fleet",
                                     FLEET, "--model", DEVICE, "--version", version, "--key",
                                     str(key)])


def _wait_log(gw: Proc, needles: str | tuple[str, ...], timeout: float) -> str:
    """The gateway's first log message containing a needle within *timeout*, or ''."""
    needles = (needles,) if isinstance(needles, str) else needles

    def match(line: str) -> bool:
        return any(n in line for n in needles)

    try:
        line = gw.expect(match, timeout, "log it", stream="err")
    except SensormlError as e:
        if "exited" in str(e):
            raise
        return ""
    return json.loads(line)["msg"] if line.startswith("{") else line


def _last_event_id(db: Path, kind: str, timeout: float = 10.0) -> int:
    """The newest *kind* event's id, once the recorder's writer has committed it."""
    from sensorml.buffer.queries import BufferQueries

    deadline = time.monotonic() + timeout
    while True:
        with BufferQueries.open(db, readonly=True) as q:
            found = q.last_event_id(kind)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise SensormlError(f"demo: no {kind} event in {db} after {timeout:.0f} s")
        time.sleep(0.1)  # the writer commits within its flush interval (0.2 s)


def _sync_summary(out: str) -> str:
    try:
        rep = json.loads(out)
    except ValueError:
        return out.strip().splitlines()[-1] if out.strip() else "synced"
    up = rep.get("uploaded") or {}
    rows = ", ".join(f"{k} {v.get('rows', v) if isinstance(v, dict) else v}"
                     for k, v in up.items()) if isinstance(up, dict) else str(up)
    return f"uploaded {rows or 'nothing new'}"
