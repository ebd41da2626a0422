"""Evaluation report: score over time with thresholds and fault ranges (PNG) and an HTML
page that embeds the plot and the figures of :func:`training.evaluate.evaluate_levels`.

matplotlib is optional (the ``[notebooks]`` extra): without it the HTML page is still
written, with the figures and without the plot.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path

import numpy as np

from training.evaluate import LEVELS, jsonable, summary_lines

__all__ = ["plot_scores", "write_report"]

_COLORS = {"warn": "#e6a700", "alarm": "#e05d00", "trip": "#c00000"}


def plot_scores(path: str | os.PathLike, t: np.ndarray, score: np.ndarray, thresholds: dict,
                faults: list[tuple[float, float]], *, title: str = "",
                time_label: str = "time (s)") -> Path | None:
    """Write the PNG; returns its path, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    t, score = _envelope(np.asarray(t, np.float64), np.asarray(score, np.float64))
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    try:
        for i, (lo, hi) in enumerate(faults):
            lo_, hi_ = max(lo, t[0]) if len(t) else lo, min(hi, t[-1]) if len(t) else hi
            ax.axvspan(lo_, hi_, color="#d62728", alpha=0.12, lw=0,
                       label="labelled fault" if i == 0 else None)
        ax.plot(t, score, lw=0.8, color="#1f77b4", label="score")
        for k in LEVELS:
            v = float(thresholds[k])
            if math.isfinite(v):
                ax.axhline(v, color=_COLORS[k], lw=0.9, ls="--", label=f"{k} {v:.3g}")
        ax.set_xlabel(time_label)
        ax.set_ylabel("anomaly score")
        if title:
            ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8, ncols=3)
        fig.tight_layout()
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p)
    finally:
        plt.close(fig)
    return p


def _envelope(t: np.ndarray, s: np.ndarray, max_points: int = 8000) -> tuple[np.ndarray, np.ndarray]:
    """At most *max_points*: per bucket of rows its lowest and highest score, in time order
    (a 1000-pixel plot shows the same, and every peak over a threshold stays visible).

    >>> t, s = _envelope(np.arange(10.0), np.arange(10.0) % 3, max_points=4)
    >>> t.tolist(), s.tolist()
    ([0.0, 2.0, 5.0, 6.0], [0.0, 2.0, 2.0, 0.0])
    """
    n = len(s)
    if n <= max_points:
        return t, s
    k = -(-n // (max_points // 2))
    m = n // k * k
    sb = np.where(np.isnan(s[:m]), -np.inf, s[:m]).reshape(-1, k)
    lo_i = np.argmin(np.where(np.isinf(sb), np.inf, sb), axis=1)
    hi_i = np.argmax(sb, axis=1)
    base = np.arange(len(sb)) * k
    idx = np.unique(np.concatenate([base + lo_i, base + hi_i, np.arange(m, n)]))
    return t[idx], s[idx]


def _cell(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


def write_report(out_dir: str | os.PathLike, ev: dict, *, t: np.ndarray, score: np.ndarray,
                 faults: list[tuple[float, float]], title: str,
                 time_label: str = "time (s)") -> dict[str, Path]:
    """Write ``evaluation.json``, ``scores.png`` (if matplotlib) and ``report.html``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    (d / "evaluation.json").write_text(json.dumps(jsonable(ev), indent=2) + "\n")
    files["json"] = d / "evaluation.json"
    png = plot_scores(d / "scores.png", t, score, ev["thresholds"], faults, title=title,
                      time_label=time_label)
    if png is not None:
        files["png"] = png
    rows = []
    for kind in ("levels", "raw"):
        for lvl in LEVELS:
            p, e = ev[kind][lvl]["point"], ev[kind][lvl]["event"]
            rows.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in (
                "decided" if kind == "levels" else "raw score", lvl, p["precision"], p["recall"],
                p["f1"], p["false_alarm_rate"], p["missed_alarm_rate"],
                f"{e['detected']}/{e['events']}", e["mean_delay_s"], e["false_alarms"],
                e["false_alarms_per_hour"])) + "</tr>")
    img = ""
    if png is not None:
        b64 = base64.b64encode(png.read_bytes()).decode()
        img = f'<img alt="score over time" src="data:image/png;base64,{b64}">'
    head = ("<tr><th>verdicts</th><th>level</th><th>precision</th><th>recall</th><th>F1</th>"
            "<th>false-alarm rate</th><th>missed-alarm rate</th><th>events detected</th>"
            "<th>mean delay (s)</th><th>false alarms</th><th>per hour</th></tr>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}}img{{max-width:100%}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p>{'<br>'.join(html.escape(x) for x in summary_lines(ev))}</p>
{img}
<table>{head}{''.join(rows)}</table>
<p>"decided": verdicts of the gateway's Decider (k-of-n debounce, hysteresis);
"raw score": the score against the threshold, row by row.</p>
</body></html>
"""
    (d / "report.html").write_text(page)
    files["html"] = d / "report.html"
    return files

