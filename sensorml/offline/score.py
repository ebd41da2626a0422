"""``sensorml score``: score a table or a gateway buffer offline, as the gateway would.

    sensorml score --bundle bundle/ --table run.csv --out scores.csv --trusted keys/signing.pub
    sensorml score --bundle bundle/ --buffer buffer.db --out scores.csv --trusted keys/signing.pub

The same scoring as the gateway: the bundle is loaded with every check
(:func:`sensorml.bundles.bundle.load_bundle`), each row is scored by
:class:`sensorml.edge.scorer.Scorer` and the verdicts come from a
:class:`sensorml.edge.decider.Decider` with the bundle's thresholds and the gateway's
debounce defaults (k=3 of n=5, hysteresis 0.1; change them with ``--k/--n/--hysteresis``).

A table bundle (``feature_spec.kind == "table"``) rebuilds its features with
:func:`sensorml.offline.tablefeatures.table_features` from the columns its manifest names.
Output: one CSV row per input row, ``time,score,verdict``; rows without enough history
for the temporal context have an empty score and verdict ``warmup``, rows whose history
holds a missing value (NaN policy ``reject``) verdict ``missing``. For a buffer the
stored feature vectors are re-scored and the recorded score/verdict/model are kept
beside the new ones. Rows are scored in one onnxruntime batch (the gateway scores one
row per call: the same model and features, equal to float32 rounding).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sensorml.edge.decider import Decider, Thresholds, Verdict
from sensorml.errors import ConfigError
from sensorml.offline.tablefeatures import TableSpec, fill_missing, is_table_spec, table_features
from sensorml.offline.tableio import Table, read_buffer_scores, read_table

__all__ = ["ScoredRows", "score_rows", "table_matrix", "score_table", "add_arguments", "run"]

WARMUP, MISSING = "warmup", "missing"


@dataclass(frozen=True)
class ScoredRows:
    """Per input row: ``score`` (NaN where not scored) and ``verdict`` text."""

    score: np.ndarray
    verdict: tuple[str, ...]
    scored: int
    warmup: int
    missing: int
    filled: int = 0


def score_rows(scorer, X: np.ndarray, ok: np.ndarray, thresholds: Thresholds, *, k: int = 3,
               n: int = 5, hysteresis: float = 0.1, why_not: np.ndarray | None = None
               ) -> ScoredRows:
    """Score the rows where *ok* and run them through one Decider in order.

    *why_not* names the reason of each skipped row (default ``warmup``).
    """
    X = np.asarray(X, np.float32)
    ok = np.asarray(ok, bool)
    s = np.full(len(X), np.nan)
    if ok.any():
        s[ok] = scorer.score_batch(X[ok])
    dec = Decider(thresholds, k=k, n=n, hysteresis=hysteresis)
    verdicts: list[str] = []
    for i in range(len(X)):
        if ok[i]:
            verdicts.append(dec.update(float(s[i])).verdict.label)
        else:
            verdicts.append(str(why_not[i]) if why_not is not None else WARMUP)
    n_ok = int(ok.sum())
    miss = sum(1 for v in verdicts if v == MISSING)
    return ScoredRows(s, tuple(verdicts), n_ok, len(X) - n_ok - miss, miss)


def table_matrix(table: Table, spec: TableSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Features of a table read for *spec*: ``(X, ok, why_not, filled)``."""
    idx = [table.columns.index(c) for c in spec.columns]
    v = table.values[:, idx]
    filled = 0
    if spec.nan == "fill":
        v, filled = fill_missing(v, spec)
    X, ok = table_features(v, spec)
    why = np.array([WARMUP] * len(X), dtype=object)
    hist_bad = ~ok
    hist_bad[:spec.warmup()] = False
    why[hist_bad] = MISSING
    return X, ok, why, filled


def score_table(bundle, path: str | os.PathLike, *, time_column: str | None = None,
                delimiter: str | None = None, k: int = 3, n: int = 5, hysteresis: float = 0.1,
                scorer=None) -> tuple[Table, ScoredRows]:
    """Read *path* with the columns the bundle's table spec names and score every row."""
    from sensorml.edge.scorer import Scorer

    fs = bundle.manifest.feature_spec
    if not is_table_spec(fs):
        raise ConfigError(f"{bundle.path}: this bundle scores sensor windows, not table rows "
                          "(its feature_spec has no kind 'table'); use --buffer or a gateway")
    spec = TableSpec.from_dict(fs)
    tcol = time_column if time_column is not None else spec.time_column
    table = read_table(path, time_column=tcol, columns=spec.columns, delimiter=delimiter)
    X, ok, why, filled = table_matrix(table, spec)
    r = score_rows(scorer or Scorer(bundle), X, ok, Thresholds(**_th(bundle)), k=k, n=n,
                   hysteresis=hysteresis, why_not=why)
    return table, ScoredRows(r.score, r.verdict, r.scored, r.warmup, r.missing, filled)


def _th(bundle) -> dict:
    th = bundle.manifest.thresholds
    return {"warn": float(th["warn"]), "alarm": float(th["alarm"]), "trip": float(th["trip"])}


def _fmt(x: float) -> str:
    return "" if not np.isfinite(x) else f"{x:.9g}"


def _write_csv(path: str, header: list[str], rows) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    if path == "-":
        sys.stdout.write(buf.getvalue())
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``sensorml score``'s options on *p* (its ``fn`` default is :func:`run`)."""
    p.set_defaults(fn=run)
    p.add_argument("--bundle", required=True, help="bundle directory or .tar.gz")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--table", help="CSV or Parquet, one row per time step")
    src.add_argument("--buffer", help="a gateway's buffer.db (its stored feature vectors)")
    p.add_argument("--out", required=True, help="scores CSV to write ('-' for stdout)")
    p.add_argument("--trusted", action="append", default=[],
                   help="public key that may have signed the bundle (repeatable)")
    p.add_argument("--allow-unsigned", action="store_true", help="accept an unsigned bundle")
    p.add_argument("--time-column", help="override the bundle's time column")
    p.add_argument("--delimiter", help="CSV delimiter (default: sniffed)")
    p.add_argument("--since", type=float, help="buffer: from this unix time")
    p.add_argument("--until", type=float, help="buffer: before this unix time")
    p.add_argument("--k", type=int, default=3, help="decider: k of n windows (default 3)")
    p.add_argument("--n", type=int, default=5, help="decider: n (default 5)")
    p.add_argument("--hysteresis", type=float, default=0.1, help="decider hysteresis (0.1)")


def run(a: argparse.Namespace) -> int:
    """Score, write the CSV, print the counts on stderr; a user's mistake raises
    :class:`~sensorml.errors.SensormlError` (the command line prints it as one line, exit status 2)."""
    from sensorml.bundles.bundle import load_bundle
    from sensorml.edge.scorer import Scorer

    if not a.trusted and not a.allow_unsigned:
        raise ConfigError("--trusted: give the public key that signed the bundle "
                          "(or --allow-unsigned to skip the signature check)")
    b = load_bundle(a.bundle, trusted_keys=a.trusted, allow_unsigned=a.allow_unsigned)
    scorer = Scorer(b)
    kw = {"k": a.k, "n": a.n, "hysteresis": a.hysteresis}
    if a.table:
        table, r = score_table(b, a.table, time_column=a.time_column, delimiter=a.delimiter,
                               scorer=scorer, **kw)
        _write_csv(a.out, ["time", "score", "verdict"],
                   ([tt, _fmt(s), v] for tt, s, v in zip(table.t_text, r.score, r.verdict)))
        what = f"{len(table)} rows of {table.source}"
    else:
        rows = read_buffer_scores(a.buffer, a.since, a.until, n_features=scorer.n_features)
        ok = np.ones(len(rows.t), bool)
        r = score_rows(scorer, rows.X, ok, Thresholds(**_th(b)), **kw)
        _write_csv(a.out, ["time", "score", "verdict", "recorded_score", "recorded_verdict",
                           "recorded_model"],
                   ([f"{t:.6f}", _fmt(s), v, _fmt(rs), Verdict(int(rv)).label, m]
                    for t, s, v, rs, rv, m in zip(rows.t, r.score, r.verdict, rows.score,
                                                  rows.verdict, rows.model_version)))
        what = f"{len(rows.t)} buffer rows ({rows.skipped} without features of width " \
               f"{scorer.n_features} skipped)"
    counts = {v: r.verdict.count(v) for v in dict.fromkeys(r.verdict)}
    print(f"scored {what} with {b.manifest.name} {b.manifest.version}: "
          + ", ".join(f"{v}={c}" for v, c in counts.items())
          + (f"; {r.filled} missing values filled" if r.filled else "")
          + (f" -> {a.out}" if a.out != "-" else ""), file=sys.stderr)
    return 0
