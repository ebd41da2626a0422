"""The commands beside the machine: ``gateway``, ``check-config``, ``status``, ``reset``,
``label``, ``learn``, ``sync`` and ``demo``. Each ``add_*`` wires one command's parser
(see :mod:`sensorml.cli.tree`); each ``cmd_*`` runs it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from sensorml.errors import SensormlError


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


def config(path: str):
    from sensorml.config import load_config

    return load_config(path)


def duration(text: str) -> float:
    """An argparse type: ``60s``, ``5m``, ``500ms`` → seconds."""
    from firmware_bridge.parsing import parse_duration

    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=("json", "text"), default="json",
                   help="structured JSON lines (default) or plain text on stderr")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")


def add_gateway(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="gateway.toml")
    _log_args(p)
    p.set_defaults(fn=cmd_gateway)


def cmd_gateway(a: argparse.Namespace) -> int:
    from sensorml.gateway.process import run_gateway

    setup_logging(a.log_format, a.log_level)
    return run_gateway(config(a.config))


def add_check_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="gateway.toml")
    p.set_defaults(fn=cmd_check_config)


def cmd_check_config(a: argparse.Namespace) -> int:
    cfg = config(a.config)
    spec = cfg.feature_spec()
    out = cfg.to_dict()
    out["feature_spec"] = spec.to_dict()
    print(json.dumps(out, indent=2, default=str))
    print(f"{a.config}: ok ({len(spec.names())} features)", file=sys.stderr)
    return 0


def add_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="gateway.toml of the running gateway")
    p.add_argument("--json", action="store_true", help="print the raw JSON status")
    p.set_defaults(fn=cmd_status)


def cmd_status(a: argparse.Namespace) -> int:
    from sensorml.gateway.client import call

    st = call(config(a.config).state_dir, "/status")
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


def add_reset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="gateway.toml of the running gateway")
    p.add_argument("--by", default="sensorml reset", help="who resets (recorded with the event)")
    p.add_argument("--force", action="store_true",
                   help="reset even while the trip's cause is still present (it trips again "
                        "at once if the cause is real)")
    p.add_argument("--note", default="", help="why (recorded with the reset event)")
    p.set_defaults(fn=cmd_reset)


def cmd_reset(a: argparse.Namespace) -> int:
    from sensorml.gateway.client import call

    r = call(config(a.config).state_dir, "/reset",
             {"by": a.by, "force": a.force, "note": a.note})
    print(r["detail"])
    return 0 if r["ok"] else 1


def add_label(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="gateway.toml (its buffer)")
    p.add_argument("--event", type=int, help="event id (see --list)")
    p.add_argument("--verdict", choices=("true_fault", "false_alarm"), help="the verdict")
    p.add_argument("--note", default="", help="what was found")
    p.add_argument("--by", default=None, help="who says so (default: the login name)")
    p.add_argument("--list", action="store_true", help="list recent alarm/trip events")
    p.add_argument("--limit", type=int, default=20, help="how many to list (default 20)")
    p.set_defaults(fn=cmd_label)


def cmd_label(a: argparse.Namespace) -> int:
    from sensorml.buffer.labels import alarm_events, format_events, label_event

    cfg = config(a.config)
    if a.list or a.event is None:
        print(format_events(alarm_events(cfg.buffer.path, limit=a.limit)))
        return 0
    if a.verdict is None:
        raise SensormlError("give --verdict true_fault or --verdict false_alarm")
    lid = label_event(cfg.buffer.path, a.event, a.verdict, note=a.note, by=a.by)
    print(f"label {lid}: event {a.event} is {a.verdict} (syncs with the next `sensorml sync`)")
    return 0


def add_learn(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="gateway.toml (its source and features)")
    p.add_argument("--duration", dest="duration_s", type=duration, default=60.0,
                   help="how long to record, e.g. 60s or 5m (default 60s)")
    p.add_argument("--out", required=True, help="output .npz (X, names, feature_spec)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(fn=cmd_learn)


def cmd_learn(a: argparse.Namespace) -> int:
    from sensorml.gateway.learn import learn

    setup_logging("text", "warning")
    n = learn(config(a.config), Path(a.out), duration_s=a.duration_s, progress=not a.quiet)
    print(f"wrote {n} healthy feature rows to {a.out}")
    return 0


def add_sync(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="gateway.toml ([sync] store, caps)")
    p.add_argument("--every", dest="every_s", type=duration, default=None,
                   help="loop with this period, e.g. 60s (default: sync.every)")
    p.add_argument("--once", action="store_true", help="one run; exit 1 if it failed")
    _log_args(p)
    p.set_defaults(fn=cmd_sync)


def cmd_sync(a: argparse.Namespace) -> int:
    from sensorml.sync.job import run_sync

    setup_logging(a.log_format, a.log_level)
    return run_sync(config(a.config), every_s=a.every_s, once=a.once)


def add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="build/demo", help="where everything is written")
    p.add_argument("--fault", default="outer_race", help="fault to inject (default outer_race)")
    p.add_argument("--learn", dest="learn_s", type=duration, default=40.0,
                   help="healthy recording time (default 40s)")
    p.add_argument("--quick", action="store_true", help="shorter phases (for tests)")
    p.set_defaults(fn=cmd_demo)


def cmd_demo(a: argparse.Namespace) -> int:
    from sensorml.demo.run import run_demo

    return run_demo(Path(a.workdir), fault=a.fault, learn_s=a.learn_s, quick=a.quick)


def add_examples(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="folder to write into (e.g. build/try)")
    p.add_argument("--force", action="store_true", help="overwrite example files you edited")
    p.set_defaults(fn=cmd_examples)


def cmd_examples(a: argparse.Namespace) -> int:
    from sensorml.examples import write_examples

    for path in write_examples(Path(a.dir), force=a.force):
        print(path)
    return 0
