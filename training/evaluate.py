"""Evaluation of a detector against labelled faults: pure functions on arrays.

Inputs are per row: ``alarm`` (bool, the detector said "fault"), ``truth`` (bool, the
row lies in a labelled fault), ``t`` (seconds) and ``scored`` (the row was scored; warm-up
rows are left out of every count).

Point-wise (each scored row a sample): precision, recall, F1, false-alarm rate
``FP / (FP + TN)`` and missed-alarm rate ``FN / (TP + FN)``.

Event-wise: a fault *event* is a maximal run of ``truth`` rows. It is *detected* when an
alarm row falls inside it; its *delay* is the time from the event's first row to the
first alarm row. A *false alarm* is an alarm episode (a maximal run of alarm rows) that
starts outside every fault; false alarms per hour divide by the healthy time (the sum
of the row spacings of non-fault rows).

>>> truth = np.array([0, 0, 0, 1, 1, 1, 0, 0], bool)
>>> alarm = np.array([0, 1, 0, 0, 1, 1, 0, 0], bool)
>>> p = pointwise(alarm, truth)
>>> p["tp"], p["fp"], p["fn"], p["tn"], round(p["precision"], 3), round(p["recall"], 3)
(2, 1, 1, 4, 0.667, 0.667)
>>> e = eventwise(alarm, truth, np.arange(8.0))
>>> e["events"], e["detected"], e["delays_s"], e["false_alarms"]
(1, 1, [1.0], 1)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sensorml.edge.decider import Verdict

__all__ = ["LEVELS", "runs", "pointwise", "eventwise", "evaluate_levels", "summary_lines",
           "jsonable", "manifest_metrics"]

LEVELS = ("warn", "alarm", "trip")


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of true values as ``(start, end)`` row indices, end exclusive.

    >>> runs(np.array([1, 1, 0, 1, 0, 0, 1], bool))
    [(0, 2), (3, 4), (6, 7)]
    """
    m = np.asarray(mask, bool).astype(np.int8)
    d = np.diff(np.concatenate(([0], m, [0])))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b else math.nan


def pointwise(alarm: np.ndarray, truth: np.ndarray, scored: np.ndarray | None = None) -> dict:
    """Confusion counts and rates over the scored rows (NaN where undefined)."""
    a, y = np.asarray(alarm, bool), np.asarray(truth, bool)
    if scored is not None:
        s = np.asarray(scored, bool)
        a, y = a[s], y[s]
    tp, fp = int((a & y).sum()), int((a & ~y).sum())
    fn, tn = int((~a & y).sum()), int((~a & ~y).sum())
    p, r = _div(tp, tp + fp), _div(tp, tp + fn)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": p, "recall": r, "f1": f1,
            "false_alarm_rate": _div(fp, fp + tn), "missed_alarm_rate": _div(fn, tp + fn)}


def _healthy_seconds(t: np.ndarray, healthy: np.ndarray) -> float:
    if len(t) < 2:
        return 0.0
    dt = np.diff(t)
    step = float(np.median(dt)) if len(dt) else 0.0
    dt = np.append(dt, step)  # the last row lasts one typical step
    return float(dt[healthy].sum())


def eventwise(alarm: np.ndarray, truth: np.ndarray, t: np.ndarray,
              scored: np.ndarray | None = None) -> dict:
    """Detection rate, delays and false alarms (see the module docstring)."""
    a, y = np.asarray(alarm, bool), np.asarray(truth, bool)
    t = np.asarray(t, np.float64)
    if scored is not None:
        a = a & np.asarray(scored, bool)
    events = runs(y)
    delays: list[float] = []
    for lo, hi in events:
        hit = np.flatnonzero(a[lo:hi])
        if hit.size:
            delays.append(float(t[lo + hit[0]] - t[lo]))
    false = [lo for lo, _ in runs(a) if not y[lo]]
    healthy = ~y if scored is None else (~y & np.asarray(scored, bool))
    hours = _healthy_seconds(t, healthy) / 3600.0
    return {"events": len(events), "detected": len(delays),
            "detection_rate": _div(len(delays), len(events)), "delays_s": delays,
            "mean_delay_s": float(np.mean(delays)) if delays else math.nan,
            "max_delay_s": float(np.max(delays)) if delays else math.nan,
            "false_alarms": len(false), "healthy_hours": hours,
            "false_alarms_per_hour": _div(len(false), hours)}


def evaluate_levels(score: np.ndarray, verdict: list[str] | tuple[str, ...] | np.ndarray,
                    truth: np.ndarray, t: np.ndarray, thresholds: dict) -> dict:
    """Point-wise and event-wise results per level (warn, alarm, trip).

    *verdict* per row: ``normal|warn|alarm|trip`` (the Decider's, as the gateway would
    decide) or anything else (``warmup``, ``missing``) for unscored rows. A row counts as
    an alarm at level L when its verdict is L or higher; ``raw`` gives the same counts
    for the bare score against each threshold (no debounce).
    """
    score = np.asarray(score, np.float64)
    rank = {v.label: int(v) for v in Verdict}
    vr = np.array([rank.get(str(v), -1) for v in verdict])
    scored = vr >= 0
    out: dict[str, Any] = {"rows": int(len(score)), "scored_rows": int(scored.sum()),
                           "fault_rows": int((np.asarray(truth, bool) & scored).sum()),
                           "thresholds": {k: float(thresholds[k]) for k in LEVELS}, "levels": {},
                           "raw": {}}
    for lvl in LEVELS:
        al = vr >= rank[lvl]
        out["levels"][lvl] = {"point": pointwise(al, truth, scored),
                              "event": eventwise(al, truth, t, scored)}
        raw = np.where(scored, score >= float(thresholds[lvl]), False)
        out["raw"][lvl] = {"point": pointwise(raw, truth, scored),
                           "event": eventwise(raw, truth, t, scored)}
    return out


def _f(v: float, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.3g}"


def summary_lines(ev: dict) -> list[str]:
    """Human-readable lines of :func:`evaluate_levels` (one per level)."""
    lines = [f"{ev['scored_rows']} of {ev['rows']} rows scored, {ev['fault_rows']} in faults"]
    for lvl in LEVELS:
        p, e = ev["levels"][lvl]["point"], ev["levels"][lvl]["event"]
        lines.append(
            f"{lvl:5s} precision {_f(p['precision'], True)} recall {_f(p['recall'], True)} "
            f"F1 {_f(p['f1'])} false-alarm rate {_f(p['false_alarm_rate'], True)} missed "
            f"{_f(p['missed_alarm_rate'], True)} | events {e['detected']}/{e['events']} "
            f"delay {_f(e['mean_delay_s'])} s, false alarms {e['false_alarms']} "
            f"({_f(e['false_alarms_per_hour'])}/h)")
    return lines


def jsonable(o: Any) -> Any:
    """Strict-JSON copy: NaN/inf become None, numpy values plain numbers.

    >>> jsonable({"a": [1.0, float("nan")], "b": np.float32(2)})
    {'a': [1.0, None], 'b': 2.0}
    """
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [jsonable(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def manifest_metrics(ev: dict, *, data: str, labels: str) -> dict:
    """The compact evaluation kept in a bundle manifest's ``metrics["evaluation"]``."""
    out: dict[str, Any] = {"data": data, "labels": labels, "rows": ev["rows"],
                           "scored_rows": ev["scored_rows"], "fault_rows": ev["fault_rows"]}
    for lvl in LEVELS:
        p, e = ev["levels"][lvl]["point"], ev["levels"][lvl]["event"]
        out[lvl] = {k: p[k] for k in ("precision", "recall", "f1", "false_alarm_rate",
                                      "missed_alarm_rate")}
        out[lvl].update({k: e[k] for k in ("events", "detected", "detection_rate",
                                           "mean_delay_s", "max_delay_s", "false_alarms",
                                           "false_alarms_per_hour")})
    return jsonable(out)
