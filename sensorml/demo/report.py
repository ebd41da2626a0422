"""The demo's report: ``report.html`` and ``scores.png`` from the gateway's own buffer
and the bundles' manifests (score trace per model version, thresholds, trips, timeline)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from sensorml.buffer.queries import BufferQueries
from sensorml.buffer.rows import ScoreRow


def _manifest(work: Path, version: str) -> dict | None:
    p = work / "bundles" / f"v{version}" / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else None


def write_report(work: Path, timeline: list[tuple[float, str]]) -> Path:
    with BufferQueries.open(work / "state" / "buffer.db", readonly=True) as q:
        scores = q.scores()
        trips = [e.detail | {"t": e.t} for e in q.events("trip")]
        models = [e.detail | {"t": e.t} for e in q.events("model")]
    mans = {v: m for v in ("1", "2") if (m := _manifest(work, v))}
    plotted = _plot(work / "scores.png", scores, trips, mans)
    trip_rows = "".join(
        f"<tr><td>{html.escape(str(tr.get('cause')))}</td>"
        f"<td>{html.escape(str(tr.get('reason', '')))}</td>"
        f"<td>{(tr.get('sample_to_trip_ms') or 0):.3f} ms</td>"
        f"<td>{', '.join(str(round(a['latency_ms'], 3)) + ' ms' for a in tr.get('actions', []))}"
        f"</td></tr>" for tr in trips)
    model_rows = "".join(
        f"<tr><td>{v}</td><td>{m['model_family']}</td><td>{m['n_features']}</td>"
        f"<td>{m['training']['rows']}</td><td>{m['thresholds']['warn']:.4g} / "
        f"{m['thresholds']['alarm']:.4g} / {m['thresholds']['trip']:.4g}</td>"
        f"<td>{html.escape(str(m['training'].get('source', '')))}</td></tr>"
        for v, m in mans.items())
    tl_rows = "".join(f"<tr><td>{t:.1f} s</td><td>{html.escape(msg)}</td></tr>"
                      for t, msg in timeline)
    deploy = "".join(f"<li>{html.escape(json.dumps({k: v for k, v in m.items() if k != 't'}))}"
                     f"</li>" for m in models)
    page = f"""<!doctype html><meta charset="utf-8"><title>sensorml demo report</title>
<style>body{{font-family:sans-serif;max-width:1000px}} td,th{{padding:3px 8px}}</style>
<h1>sensorml demo: the whole loop</h1>
<p>{len(scores)} windows scored on the gateway.</p>
{'<img src="scores.png" alt="scores" width="960">' if plotted else
 '<p>(matplotlib is not installed: no plot)</p>'}
<h2>Trips</h2><table border=1><tr><th>cause</th><th>reason</th><th>sample-to-trip</th>
<th>actions</th></tr>{trip_rows}</table>
<h2>Models</h2><table border=1><tr><th>version</th><th>family</th><th>features</th>
<th>training rows</th><th>warn / alarm / trip</th><th>trained on</th></tr>{model_rows}</table>
<h2>Model events on the gateway</h2><ul>{deploy}</ul>
<h2>Timeline</h2><table border=1>{tl_rows}</table>
"""
    out = work / "report.html"
    out.write_text(page)
    return out


def _plot(png: Path, scores: list[ScoreRow], trips: list[dict], mans: dict) -> bool:
    if not scores:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    t0 = scores[0].t
    fig, ax = plt.subplots(figsize=(10, 4))
    colors = {"1": "tab:blue", "2": "tab:green"}
    for v in sorted({s.model_version for s in scores if s.model_version}):
        pts = [(s.t - t0, s.score) for s in scores if s.model_version == v]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", ms=2,
                color=colors.get(v, "tab:gray"), label=f"score, model v{v}")
        m = mans.get(v)
        if m:
            ax.axhline(m["thresholds"]["trip"], color=colors.get(v, "gray"), ls="--", lw=1,
                       label=f"trip threshold v{v} ({m['thresholds']['trip']:.3g})")
    for i, tr in enumerate(trips):
        ax.axvline(tr["t"] - t0, color="red", lw=1.5, label="trip" if i == 0 else None)
    ax.set_xlabel("seconds since the gateway started")
    ax.set_ylabel("anomaly score (higher = worse)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True
