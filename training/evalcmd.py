"""``training evaluate``: score labelled data with a bundle exactly as the gateway would
(:mod:`sensorml.offline.score`), compare with the labels (:mod:`training.evaluate`), write the
report (:mod:`training.report`) and optionally the manifest's ``metrics["evaluation"]``.

Labels: ``--fault-rows 160:960``, ``--fault-time a..b``, ``--labels file.csv`` (header
``start,end[,label]`` in times, or ``start_row,end_row[,label]``), or, for a buffer,
the operators' labels in it (a ``true_fault`` event is a fault until the next reset).
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np

from sensorml.errors import ConfigError
from training import data
from training.evaluate import evaluate_levels, manifest_metrics, summary_lines

__all__ = ["run_evaluate", "read_label_file", "row_ranges_to_times"]


def read_label_file(path: str | os.PathLike, t: np.ndarray) -> list[tuple[float, float]]:
    """Fault spans (times) from a labels CSV; row-numbered files are mapped through *t*."""
    p = Path(path)
    try:
        with open(p, newline="") as f:
            rows = [r for r in csv.reader(f) if r and not r[0].lstrip().startswith("#")]
    except OSError as e:
        raise ConfigError(f"{p.name}: cannot read labels: {e.strerror or e}") from None
    if not rows:
        raise ConfigError(f"{p.name}: empty labels file (header start,end or start_row,end_row)")
    head = [h.strip().lower() for h in rows[0]]
    if head[:2] == ["start_row", "end_row"]:
        spans = ",".join(f"{r[0].strip()}:{r[1].strip()}" for r in rows[1:])
        if not spans:
            return []
        return row_ranges_to_times(data.parse_row_ranges(spans, len(t), p.name), t)
    if head[:2] != ["start", "end"]:
        raise ConfigError(f"{p.name}: header must begin with start,end (times) or "
                          f"start_row,end_row, got {','.join(rows[0][:3])}")
    out = []
    for i, r in enumerate(rows[1:]):
        if len(r) < 2:
            raise ConfigError(f"{p.name}: row {i} has {len(r)} cells, need start,end")
        out += data.parse_time_ranges(f"{r[0].strip()}..{r[1].strip()}", f"{p.name} row {i}")
    return out


def row_ranges_to_times(ranges: list[tuple[int, int]], t: np.ndarray) -> list[tuple[float, float]]:
    """Row ranges as time spans: from the first row's time to the time after the last row."""
    t = np.asarray(t, np.float64)
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    return [(float(t[lo]), float(t[hi]) if hi < len(t) else float(t[-1]) + step)
            for lo, hi in ranges]


def _load(a, trust: dict):
    from sensorml.bundles.bundle import load_bundle
    from sensorml.edge.decider import Thresholds
    from sensorml.edge.scorer import Scorer
    from sensorml.offline.score import score_rows, score_table

    b = load_bundle(a.bundle, trusted_keys=trust["trusted_keys"],
                    allow_unsigned=trust["allow_unsigned"])
    kw = {"k": a.k, "n": a.n, "hysteresis": a.hysteresis}
    if a.table:
        table, r = score_table(b, a.table, time_column=a.time_column, delimiter=a.delimiter, **kw)
        return b, table.t, r, table.time_kind, table.source, None
    src = data.BufferSource(a.buffer, b.manifest.feature_spec)
    frame = src.features()
    if not len(frame):
        raise ConfigError(f"{a.buffer}: no score rows with {b.manifest.n_features} features to "
                          "evaluate (does the gateway keep features? is this the model's buffer?)")
    th = {k: float(b.manifest.thresholds[k]) for k in ("warn", "alarm", "trip")}
    r = score_rows(Scorer(b), frame.X, frame.valid, Thresholds(**th), **kw)
    return b, frame.t, r, "timestamp", os.path.basename(a.buffer), src


def run_evaluate(a, step) -> int:
    from training.publish import trust_from_args

    if a.update_bundle and not a.key:
        raise ConfigError("--update-bundle: needs --key to re-sign the bundle")
    trust = trust_from_args(a)
    with step(f"scoring {a.table or a.buffer} with {a.bundle}"):
        b, t, r, time_kind, source, buf = _load(a, trust)
    n = len(t)
    if a.fault_rows:
        ranges = data.parse_row_ranges(a.fault_rows, n, "--fault-rows")
        faults, how = row_ranges_to_times(ranges, t), f"rows {a.fault_rows}"
        truth = data.rows_mask(ranges, n)
    else:
        if a.fault_time:
            faults, how = data.parse_time_ranges(a.fault_time, "--fault-time"), a.fault_time
        elif a.labels:
            faults, how = read_label_file(a.labels, t), os.path.basename(a.labels)
        elif buf is not None:
            faults = [(f.start, f.end) for f in buf.labels()]
            how = f"{len(faults)} operator label(s) in the buffer"
        else:
            raise ConfigError("labels: give --fault-rows, --fault-time or --labels")
        truth = data.ranges_mask(faults, t)
    ev = evaluate_levels(r.score, r.verdict, truth, t, b.manifest.thresholds)
    title = f"{b.manifest.name} {b.manifest.version} on {source} (faults: {how})"
    print(title)
    for line in summary_lines(ev):
        print("  " + line)
    if a.out:
        from training.report import write_report

        t_plot = t - t[0] if time_kind == "timestamp" and n else t
        f_plot = [(lo - t[0], hi - t[0]) for lo, hi in faults] if time_kind == "timestamp" and n \
            else faults
        label = {"row": "row", "timestamp": "seconds from the first row"}.get(time_kind, "time (s)")
        with step(f"writing the report to {a.out}"):
            files = write_report(a.out, ev, t=t_plot, score=r.score, faults=f_plot, title=title,
                                 time_label=label)
        print("report " + ", ".join(str(p) for p in files.values()))
        if "png" not in files:
            print("(matplotlib is not installed: no plot)", file=sys.stderr)
    if a.update_bundle:
        from sensorml.bundles.bundle import write_bundle

        m = b.manifest.to_dict()
        m["metrics"] = {**m["metrics"], "evaluation": manifest_metrics(ev, data=source, labels=how)}
        write_bundle(b.path, m, b.model_bytes, a.key)
        print(f"updated {b.path}: metrics.evaluation written and re-signed")
    return 0
