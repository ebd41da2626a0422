"""``sensorml``: the command line of the edge.

Library code raises specific exceptions; this module turns a user's mistake into one
line on stderr and exit status 2 (no traceback). Every command has ``--help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from firmware_bridge.errors import BridgeError
from sensorml.errors import SensormlError

COMMANDS = ("gateway", "check-config", "status", "reset", "rollback", "learn", "keygen",
            "simulate", "train", "score", "demo", "sync", "label", "examples")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: t, level, logger, msg."""

    def format(self, record: logging.LogRecord) -> str:
        d = {"t": round(record.created, 6), "level": record.levelname.lower(),
             "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return json.dumps(d)


def setup_logging(fmt: str = "json", level: str = "info") -> None:
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JsonFormatter() if fmt == "json" else
                   logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [h]
    root.setLevel(level.upper())
    # pymodbus logs every timeout at ERROR with a frame dump; our sources report outages
    # and recoveries as their own events, once, in plain words.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def _config(path: str):
    from sensorml.config import load_config

    return load_config(path)


def cmd_gateway(a: argparse.Namespace) -> int:
    from sensorml.gateway.process import run_gateway

    setup_logging(a.log_format, a.log_level)
    return run_gateway(_config(a.config))


def cmd_check_config(a: argparse.Namespace) -> int:
    cfg = _config(a.config)
    spec = cfg.feature_spec()
    out = cfg.to_dict()
    out["feature_spec"] = spec.to_dict()
    print(json.dumps(out, indent=2, default=str))
    print(f"{a.config}: ok ({len(spec.names())} features)", file=sys.stderr)
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    from sensorml.gateway.control import call

    cfg = _config(a.config)
    st = call(cfg.state_dir, "/status")
    if a.json:
        print(json.dumps(st, indent=2))
        return 0
    model = st["model"]
    print(f"device      {st['device_id']}  (pid {st['pid']}, up {st['uptime_s']} s)")
    print(f"state       {'TRIPPED: ' + json.dumps(st['trip_reason']) if st['tripped'] else 'running'}")
    print(f"model       {model['name'] + ' ' + model['version'] if model else 'none (hard limits and watchdog only)'}")
    if st.get("model_error"):
        print(f"model error {st['model_error']}")
    print(f"windows     {st['windows']}  queue {st['queue_depth']}")
    dep = st.get("deployment") or {}
    if dep.get("candidate") or dep.get("last_rollback"):
        sh = dep.get("shadow") or {}
        cand = dep.get("candidate")
        print("deploy      " + "; ".join(x for x in (
            cand and f"{cand['version']} in shadow ({sh.get('scored', 0)}/{sh.get('windows', '?')} windows)",
            dep.get("last_rollback") and f"last rollback {dep['last_rollback']['version']}: "
                                         f"{dep['last_rollback']['reason']}") if x))
    if st.get("last_trip_latency_ms") is not None:
        print(f"last trip   {st['last_trip_latency_ms']} ms sample-to-trip")
    for url, s in st["sources"].items():
        print(f"source      {url}: " + ", ".join(f"{k}={v}" for k, v in s.items()))
    rec = st["recorder"]
    print("recorder    " + ", ".join(f"{k}={v}" for k, v in rec.items() if not isinstance(v, dict)))
    return 0


def cmd_reset(a: argparse.Namespace) -> int:
    from sensorml.gateway.control import call

    cfg = _config(a.config)
    r = call(cfg.state_dir, "/reset", {"by": a.by})
    print(r["detail"])
    return 0 if r["ok"] else 1


def cmd_rollback(a: argparse.Namespace) -> int:
    from sensorml.bundles.fetch import notify_gateway
    from sensorml.bundles.staging import CURRENT, BundleStore

    cfg = _config(a.config)
    bs = BundleStore(cfg.state_dir / "bundles")
    before = bs.link(CURRENT)
    name, version = bs.rollback(a.to, reason=a.reason, by=a.by)
    print(f"rolled back to {name} {version}" + (f" (was {before[1]})" if before else ""))
    notify_gateway(cfg.state_dir)
    return 0


def cmd_learn(a: argparse.Namespace) -> int:
    from sensorml.gateway.learn import learn

    setup_logging("text", "warning")
    cfg = _config(a.config)
    n = learn(cfg, Path(a.out), duration_s=a.duration_s, progress=not a.quiet)
    print(f"wrote {n} healthy feature rows to {a.out}")
    return 0


def cmd_keygen(a: argparse.Namespace) -> int:
    from sensorml.bundles.bundle import keygen

    priv, pub = keygen(Path(a.dir))
    print(f"private key {priv} (keep it on the training side, mode 0600)")
    print(f"public key  {pub} (list it in model.trusted_keys of each gateway)")
    return 0


def cmd_simulate(a: argparse.Namespace) -> int:
    from firmware_bridge.sim.cli import main as sim_main

    return sim_main(a.rest)


def cmd_train(a: argparse.Namespace) -> int:
    try:
        from training.cli import main as train_main
    except ImportError as e:
        raise SensormlError(f"training needs the [train] extra ({e.name} is missing): "
                            "pip install 'sensorml[train]'") from None
    return train_main(a.rest)


def cmd_score(a: argparse.Namespace) -> int:
    from sensorml.offline.score import main as score_main

    return score_main(a.rest)


def cmd_demo(a: argparse.Namespace) -> int:
    from sensorml.demo.run import run_demo

    return run_demo(Path(a.workdir), fault=a.fault, learn_s=a.learn_s, quick=a.quick)


def cmd_sync(a: argparse.Namespace) -> int:
    from sensorml.sync.job import run_sync

    setup_logging(a.log_format, a.log_level)
    return run_sync(_config(a.config), every_s=a.every_s, once=a.once)


def cmd_label(a: argparse.Namespace) -> int:
    from sensorml.buffer.labels import alarm_events, format_events, label_event

    cfg = _config(a.config)
    if a.list or a.event is None:
        print(format_events(alarm_events(cfg.buffer.path, limit=a.limit)))
        return 0
    if a.verdict is None:
        raise SensormlError("label: give --verdict true_fault or --verdict false_alarm")
    lid = label_event(cfg.buffer.path, a.event, a.verdict, note=a.note, by=a.by)
    print(f"label {lid}: event {a.event} is {a.verdict} (syncs with the next `sensorml sync`)")
    return 0


def cmd_examples(a: argparse.Namespace) -> int:
    from sensorml.examples import write_examples

    for path in write_examples(Path(a.dir), force=a.force):
        print(path)
    return 0


def _duration(text: str) -> float:
    from firmware_bridge.parsing import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensorml",
        description="Predictive-maintenance anomaly detection beside the machine: read sensors, "
                    "score every window with a compact model, trip locally on faults.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    g = add("gateway", cmd_gateway, "Run the gateway beside the machine until SIGTERM.")
    g.add_argument("--config", required=True, help="gateway.toml")
    g.add_argument("--log-format", choices=("json", "text"), default="json",
                   help="structured JSON lines (default) or plain text on stderr")
    g.add_argument("--log-level", default="info", help="debug, info, warning, error")

    c = add("check-config", cmd_check_config,
            "Check a gateway.toml and print the resolved config, or the first error.")
    c.add_argument("config", help="gateway.toml")

    s = add("status", cmd_status, "Show the running gateway's state, model, counters and trip.")
    s.add_argument("--config", required=True, help="gateway.toml of the running gateway")
    s.add_argument("--json", action="store_true", help="print the raw JSON status")

    r = add("reset", cmd_reset, "Clear a latched trip and send the reset action to the machine.")
    r.add_argument("--config", required=True, help="gateway.toml of the running gateway")
    r.add_argument("--by", default="sensorml reset", help="who resets (recorded with the event)")

    rb = add("rollback", cmd_rollback,
             "Make the last good model (or a staged --to VERSION) live again; a running "
             "gateway swaps it in.")
    rb.add_argument("--config", required=True, help="gateway.toml (its state_dir holds the bundles)")
    rb.add_argument("--to", metavar="VERSION", help="a staged version (default: last_good)")
    rb.add_argument("--reason", default="manual rollback", help="recorded for the heartbeat")
    rb.add_argument("--by", default="sensorml rollback", help="who rolls back (recorded)")

    lp = add("learn", cmd_learn,
             "Record the features of a healthy run (input for `sensorml train fit`).")
    lp.add_argument("--config", required=True, help="gateway.toml (its source and features)")
    lp.add_argument("--duration", dest="duration_s", type=_duration, default=60.0,
                    help="how long to record, e.g. 60s or 5m (default 60s)")
    lp.add_argument("--out", required=True, help="output .npz (X, names, feature_spec)")
    lp.add_argument("--quiet", action="store_true", help="no progress line")

    k = add("keygen", cmd_keygen, "Make an Ed25519 key pair for signing model bundles.")
    k.add_argument("--dir", required=True, help="folder for signing.key (private) and signing.pub")

    for name, fn, help_ in (
        ("simulate", cmd_simulate, "Run a simulated machine on a pty and/or Modbus TCP port "
                                   "(see `sensorml simulate --help`)."),
        ("train", cmd_train, "Offline training: fit, export, sign (see `sensorml train --help`)."),
        ("score", cmd_score, "Score a table or a buffer offline as the gateway would "
                             "(see `sensorml score --help`)."),
    ):
        sp = add(name, fn, help_)
        sp.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of the sub-tool")

    d = add("demo", cmd_demo, "The whole loop on this machine: simulator, learn, train, sign, "
                              "gateway, fault, trip, report.")
    d.add_argument("--workdir", default="build/demo", help="where everything is written")
    d.add_argument("--fault", default="outer_race", help="fault to inject (default outer_race)")
    d.add_argument("--learn", dest="learn_s", type=_duration, default=40.0,
                   help="healthy recording time (default 40s)")
    d.add_argument("--quick", action="store_true", help="shorter phases (for tests)")
    sy = add("sync", cmd_sync, "Upload the buffer to the cloud store (exactly once), send the "
                               "heartbeat; once, or every --every.")
    sy.add_argument("--config", required=True, help="gateway.toml ([sync] store, caps)")
    sy.add_argument("--every", dest="every_s", type=_duration, default=None,
                    help="loop with this period, e.g. 60s (default: sync.every)")
    sy.add_argument("--once", action="store_true", help="one run; exit 1 if it failed")
    sy.add_argument("--log-format", choices=("json", "text"), default="json",
                    help="structured JSON lines (default) or plain text on stderr")
    sy.add_argument("--log-level", default="info", help="debug, info, warning, error")

    lb = add("label", cmd_label, "Mark an alarm or trip event as a true fault or a false alarm "
                                 "(or --list recent ones with their ids).")
    lb.add_argument("--config", required=True, help="gateway.toml (its buffer)")
    lb.add_argument("--event", type=int, help="event id (see --list)")
    lb.add_argument("--verdict", choices=("true_fault", "false_alarm"), help="the verdict")
    lb.add_argument("--note", default="", help="what was found")
    lb.add_argument("--by", default=None, help="who says so (default: the login name)")
    lb.add_argument("--list", action="store_true", help="list recent alarm/trip events")
    lb.add_argument("--limit", type=int, default=20, help="how many to list (default 20)")

    ex = add("examples", cmd_examples, "Write the example gateway configs and register maps "
                                       "into DIR/configs and DIR/maps (they run as written "
                                       "against `sensorml simulate`).")
    ex.add_argument("dir", metavar="DIR", help="folder to write into (e.g. build/try)")
    ex.add_argument("--force", action="store_true", help="overwrite example files you edited")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("score", "simulate", "train") and argv[1:2] != ["--"]:  # sub-tools
        argv = [argv[0], "--", *argv[1:]]
    parser = build_parser()
    a = parser.parse_args(argv)
    if getattr(a, "rest", None) and a.rest[:1] == ["--"]:
        a.rest = a.rest[1:]
    try:
        return a.fn(a)
    except (SensormlError, BridgeError) as e:
        print(f"sensorml {a.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
