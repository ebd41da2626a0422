"""Issue 5 figures: publish -> live with a 60 s sync loop, and gateway throughput with sync beside it.

Figure 1: a real gateway (``sim://pump`` at 25.6 kHz, hop 512 -> ~50 windows/s, 600 shadow
windows) and a real ``sensorml sync --every 60s``; a new bundle + signed desired state is
published at a random moment; "live" = the gateway promotes the new version. Components:
wait for the next sync (0-60 s, uniform), reload (<= model.watch), shadow (600 windows ~ 12 s).
Figure 2: windows/s of a ``sim://pump?realtime=0`` gateway (``sensorml_windows_total`` on
/metrics over a fixed wall time) with ``sensorml sync --every 1s`` beside it vs without;
each round from a fresh copy of one state (model, backlog), rounds in ABBA order.
Prints, never asserts. Earlier one-off measurement: publish->live 64.1, 69.4, 15.4 s.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setup(root: Path, url: str, every: str):  # noqa: ANN202
    from sensorml.bundles.bundle import keygen, write_bundle
    from sensorml.bundles.desired import make_desired
    from training.fit import FeatureTable, fit_bundle
    from training.publish import publish
    from training.simdata import default_spec, healthy_runs

    kp = keygen(root / "keys")
    fspec = default_spec(window=1024, hop=512)
    X = healthy_runs(1, 40.0, seed=11, spec=fspec).X
    src = root / "v1"
    fit_bundle(FeatureTable(X, fspec.names(), fspec.to_dict()), out=src, key=kp[0], name="pump", version="1")
    cloud, state = root / "cloud", root / "state"

    def pub(v: str) -> None:
        man = json.loads((src / "manifest.json").read_text())
        man["version"] = v
        b = write_bundle(root / f"b{v}", man, (src / "model.onnx").read_bytes(), kp[0])
        publish(b, cloud, trusted_keys=[kp[1]])
        data, sig = make_desired("fleet", "default", "pump", v, key=kp[0])
        (cloud / "desired").mkdir(parents=True, exist_ok=True)
        (cloud / "desired/default.json.sig").write_bytes(sig)
        (cloud / "desired/default.json").write_bytes(data)

    pub("1")
    cfg = root / "gateway.toml"
    cfg.write_text(f'device_id = "bench"\nstate_dir = "{state}"\n[metrics]\nport = 0\n[source]\nurl = "{url}"\n'
                   f'[features]\nwindow = 1024\nhop = 512\n[model]\nbundle = "{state}/bundles/current"\n'
                   f'trusted_keys = ["{kp[1]}"]\n[sync]\nstore = "file://{cloud}"\nevery = "{every}"\n')
    return cfg, state, pub


def publish_to_live(trials: int = 3) -> list[float]:
    from sensorml.demo.run import Proc

    root = Path(tempfile.mkdtemp(prefix="bench_rd_"))
    gw = sy = None
    try:
        cfg, _state, pub = _setup(root, "sim://pump?rate=25600&seed=3", "60s")
        gw = _gateway(cfg, root / "gw.log")
        sy = Proc([sys.executable, "-m", "sensorml.cli", "sync", "--config", str(cfg), "--every", "60s"],
                  "sync", root / "sync.log")

        def wait_msg(pred, t: float) -> str:  # noqa: ANN001
            line = gw.expect(lambda s: s.startswith("{") and pred(json.loads(s)["msg"]), t, "msg", stream="err")
            return json.loads(line)["msg"]

        wait_msg(lambda m: m.startswith("model pump 1 loaded"), 90)
        rng = random.Random()
        out = []
        for i in range(trials):
            v = str(i + 2)
            time.sleep(rng.uniform(0, 60))
            t0 = time.monotonic()
            pub(v)
            wait_msg(lambda m, v=v: m.startswith(f"model pump {v} in shadow"), 90)
            t1 = time.monotonic()
            m = wait_msg(lambda m, v=v: m.startswith(f"model pump {v} ") and ("promoted" in m or "rolled back" in m), 90)
            t2 = time.monotonic()
            out.append(t2 - t0)
            print(f"  trial {i + 1}: publish->shadow {t1 - t0:5.1f} s, shadow {t2 - t1:5.1f} s, "
                  f"publish->live {t2 - t0:5.1f} s ({m[:40]})", flush=True)
        return out
    finally:
        for p in (sy, gw):
            if p is not None:
                p.stop()
        shutil.rmtree(root, ignore_errors=True)


def _windows(state: Path) -> float:
    info = json.loads((state / "gateway.json").read_text())
    text = urllib.request.urlopen(f"http://127.0.0.1:{info['port']}/metrics", timeout=5).read().decode()
    return sum(float(m) for m in re.findall(r"^sensorml_windows_total(?:\{[^}]*\})? (\S+)", text, re.M))


CALM = "[decision]\nwarn = 1e28\nalarm = 1e29\ntrip = 1e30\n"


def _gateway(cfg: Path, log: Path):  # noqa: ANN202
    from sensorml.demo.run import Proc

    gw = Proc([sys.executable, "-m", "sensorml.cli", "gateway", "--config", str(cfg)], "gateway", log)
    gw.expect(lambda s: "running" in s, 30, "start")
    return gw


def _template(root: Path, calm: bool = False) -> tuple[Path, Path]:
    """A gateway state with v1 fetched and live, and a backlog: the gateway runs, one
    ``sync --once`` fetches the model, the gateway loads it and runs 5 s more."""
    cfg, state, _pub = _setup(root, "sim://pump?rate=25600&seed=3&realtime=0", "1s")
    if calm:  # thresholds out of reach: the steady state of a healthy machine
        cfg.write_text(cfg.read_text() + CALM)
    gw = _gateway(cfg, root / "gw-template.log")
    try:
        r = subprocess.run([sys.executable, "-m", "sensorml.cli", "sync", "--config", str(cfg), "--once"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"sync --once: {r.stderr.strip()[-300:]}")
        gw.expect(lambda s: '"model pump 1 loaded"' in s, 60, "load the fetched model", stream="err")
        time.sleep(5)  # a backlog builds up
    finally:
        gw.stop()
    return cfg, state


def _round(root: Path, cfg: Path, template: Path, k: int, beside: bool, seconds: float) -> float:
    """One measurement from a fresh copy of the template state: windows/s of the unpaced
    gateway over ``seconds``, after the same 6 s start-up whether or not sync runs. The
    gateway must come up with the model (checked: a model-less gateway is 2.5x faster and
    made an earlier version of this figure meaningless)."""
    from sensorml.demo.run import Proc

    state = root / f"state-{k}"
    shutil.copytree(template, state, symlinks=True)  # the store links relatively
    (state / "gateway.json").unlink(missing_ok=True)
    rcfg = root / f"gateway-{k}.toml"
    rcfg.write_text(cfg.read_text().replace(f'"{template}', f'"{state}'))
    gw = _gateway(rcfg, root / f"gw-{k}.log")
    sy = None
    try:
        gw.expect(lambda s: '"model pump 1 loaded"' in s, 5, "load the model at start", stream="err")
        if beside:
            sy = Proc([sys.executable, "-m", "sensorml.cli", "sync", "--config", str(rcfg), "--every", "1s"],
                      "sync", root / f"sync-{k}.log")
        time.sleep(6)  # the gateway warms up; the sync process imports and starts its first run
        w0, t0 = _windows(state), time.monotonic()
        time.sleep(seconds)
        return (_windows(state) - w0) / (time.monotonic() - t0)
    finally:
        for p in (sy, gw):
            if p is not None:
                p.stop()
        shutil.rmtree(state, ignore_errors=True)


def throughput_ratio(seconds: float = 15.0, pairs: int = 6,
                     calm: bool = False) -> tuple[list[float], list[float]]:
    """Windows/s of an unpaced gateway (``sim://pump?realtime=0``) with ``sensorml sync
    --every 1s`` beside it against without. Every round starts from a copy of the same
    state (model fetched, a backlog of ~10 s of unpaced rows for sync to upload), so the
    buffer does not grow from round to round; rounds run in ABBA order so a drift of the
    machine over the run weighs on both sides alike."""
    root = Path(tempfile.mkdtemp(prefix="bench_rd_tp_"))
    try:
        cfg, template = _template(root, calm)
        without, with_ = [], []
        order = [b for i in range(pairs) for b in ((False, True) if i % 2 == 0 else (True, False))]
        for k, beside in enumerate(order):
            rate = _round(root, cfg, template, k, beside, seconds)
            (with_ if beside else without).append(rate)
            print(f"  round {k + 1}: {'with sync   ' if beside else 'without sync'} {rate:8.0f} windows/s",
                  flush=True)
        return without, with_
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _report_ratio(without: list[float], with_: list[float]) -> float:
    """Print the medians and the per-pair ratios; returns the ratio of the medians."""
    wo, wi = statistics.median(without), statistics.median(with_)
    ratio = wi / wo if wo else float("nan")
    pairs = sorted(b / a for a, b in zip(without, with_) if a)
    print(f"  median without {wo:.0f} windows/s, with {wi:.0f} windows/s, ratio {ratio:.3f}; "
          f"per pair {', '.join(f'{r:.3f}' for r in pairs)}")
    return ratio


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--throughput" in argv:  # figure 2 alone
        _report_ratio(*throughput_ratio(calm="--calm" in argv))
        return
    print("figure 1: publish -> live (sync every 60 s, 600 shadow windows at ~50 windows/s)", flush=True)
    live = publish_to_live()
    med = statistics.median(live)
    print(f"  median publish->live {med:.1f} s = wait for next sync (0-60 s) + reload (<= model.watch) "
          "+ shadow (~12 s)")
    print("figure 2: gateway throughput with sync beside it vs without (sim realtime=0)", flush=True)
    ratio = _report_ratio(*throughput_ratio())
    print(f"\n{'figure':40s} {'measured':>12s} {'target':>10s}")
    print(f"{'publish -> live (median of 3)':40s} {med:10.1f} s {'<= ~75 s':>10s}")
    print(f"{'throughput with sync / without':40s} {ratio:12.3f} {'>= 0.95':>10s}")


if __name__ == "__main__":
    main()
