"""``training``: fit, evaluate, export, sign and publish model bundles from the command line.

    training fit --table run.csv --time-column t --columns a,b,c --healthy-rows 0:400 \\
                 --key keys/signing.key --name pump --version 3 --out bundles/pump-3
    training fit --features healthy.npz --out bundles/pump-3 \\
                 --key keys/signing.key --name pump --version 3
    training evaluate --bundle bundles/pump-3 --key keys/signing.key --table run.csv \\
                 --fault-rows 400: --out reports/pump-3 --update-bundle
    training publish bundles/pump-3 --store file:///srv/cloud --key keys/signing.key
    training export bundles/pump-3 --out pump-3.tar.gz --key keys/signing.key
    training keygen --dir keys
    training verify bundles/pump-3 --trusted keys/signing.pub
    training sign bundles/pump-3 --key keys/signing.key

A user's mistake is one line on stderr and exit status 2, never a traceback. Progress
of the long steps goes to stderr (``--quiet`` silences it).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from sensorml.errors import SensormlError

__all__ = ["main", "build_parser"]

_QUIET = False


@contextmanager
def step(text: str):
    """Print ``text …`` then the time it took, on stderr (a long step's progress)."""
    t0 = time.perf_counter()
    if not _QUIET:
        print(f"{text} …", file=sys.stderr, flush=True)
    yield
    if not _QUIET:
        print(f"  done in {time.perf_counter() - t0:.2f} s", file=sys.stderr, flush=True)


def _csv_list(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _int_list(text: str | None, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _csv_list(text) or [])
    except ValueError:
        raise SensormlError(f"{what}: {text!r} is not a list of whole numbers like 1,2,5") from None


def _models() -> tuple[str, ...]:
    from training import fit

    return tuple(getattr(fit, "MODELS", ("iforest", "pca")))


def _default_model() -> str:
    from training import fit

    return fit.DEFAULT_MODEL


def _add_table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--time-column", help="column of times (numbers or ISO timestamps)")
    p.add_argument("--delimiter", help="CSV delimiter (default: sniffed)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="training", description=__doc__.split("\n")[0])
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit on healthy rows, calibrate, export, sign, write a bundle")
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", metavar="F.npz", help="written by `sensorml learn` (X, names, feature_spec)")
    src.add_argument("--table", metavar="T", help="CSV (any delimiter) or Parquet, one row per time step")
    src.add_argument("--buffer", metavar="DB", help="a gateway's buffer.db (its stored feature vectors)")
    src.add_argument("--feature-table", metavar="F.csv",
                     help="CSV of ready features: header of feature names, one row per window")
    src.add_argument("--ingest", metavar="STORE",
                     help="a cloud store the gateways synced to (file:///..., s3://...): "
                          "retrain on their windows, minus labelled faults and unlabelled alarms")
    f.add_argument("--device", help="--ingest: only this device's data")
    f.add_argument("--spec", metavar="SPEC.json",
                   help="feature spec for --feature-table/--buffer/--ingest: a JSON spec, or a "
                        "bundle folder whose manifest gives it (the model the data was scored by)")
    _add_table_args(f)
    f.add_argument("--columns", help="table columns to use, a,b,c (default: every numeric one)")
    f.add_argument("--healthy-rows", help="healthy rows, e.g. 0:400 or 0:400,900:")
    f.add_argument("--healthy-time", help="healthy time span(s), e.g. 2024-01-01T00:00..2024-01-02T00:00")
    f.add_argument("--lags", help="table: lagged values, e.g. 1,2,5 rows back")
    f.add_argument("--rolling", type=int, default=0, help="table: rolling window of k rows (>= 2)")
    f.add_argument("--rolling-stats", default="mean,std,slope", help="of mean,std,slope")
    f.add_argument("--no-values", action="store_true", help="table: leave the raw values out")
    f.add_argument("--nan", choices=("reject", "fill"), default="reject",
                   help="missing values: reject (default) or forward fill then column median")
    f.add_argument("--model", choices=_models(), default=_default_model(),
                   help=f"model family (default {_default_model()})")
    f.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a model family parameter (repeatable)")
    f.add_argument("--out", required=True, help="bundle directory (or .tar.gz) to write")
    f.add_argument("--key", help="Ed25519 private key PEM to sign with")
    f.add_argument("--unsigned", action="store_true", help="write without a signature (tests only)")
    f.add_argument("--name", help="model name (default: the input file's stem)")
    f.add_argument("--version", help="model version (default: the UTC time, YYYYMMDDhhmmss)")
    f.add_argument("--holdout", type=float, default=0.25, help="share of rows held out (default 0.25)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--n-estimators", type=int, help="iforest: trees")
    f.add_argument("--n-components", type=float,
                   help="PCA: components, or the share of variance to keep if < 1")
    f.add_argument("--pca-kind", help="PCA statistic (e.g. spe, t2)")
    f.add_argument("--anomalies", metavar="A.npz", help="known-bad rows (X) to report detection rates")

    e = sub.add_parser("evaluate", help="score labelled data with a bundle; precision, recall, "
                                        "delays, false alarms; plots")
    e.add_argument("--bundle", required=True)
    es = e.add_mutually_exclusive_group(required=True)
    es.add_argument("--table", help="CSV or Parquet with the bundle's columns")
    es.add_argument("--buffer", help="a gateway's buffer.db")
    _add_table_args(e)
    lab = e.add_mutually_exclusive_group()
    lab.add_argument("--fault-rows", help="faulty rows, e.g. 160:960")
    lab.add_argument("--fault-time", help="faulty time span(s), a..b[,c..d]")
    lab.add_argument("--labels", help="CSV with start,end[,label] (times) or start_row,end_row")
    e.add_argument("--out", help="report directory (evaluation.json, scores.png, report.html)")
    e.add_argument("--update-bundle", action="store_true",
                   help="write the evaluation into the manifest's metrics and re-sign (needs --key)")
    _add_trust_args(e)
    e.add_argument("--k", type=int, default=3, help="decider k of n (gateway default 3)")
    e.add_argument("--n", type=int, default=5, help="decider n (gateway default 5)")
    e.add_argument("--hysteresis", type=float, default=0.1)

    x = sub.add_parser("export", help="convert a bundle: directory <-> .tar.gz archive (signed "
                                      "bytes unchanged)")
    x.add_argument("bundle")
    x.add_argument("--out", required=True, help="a .tar.gz path, or a directory")
    x.add_argument("--force", action="store_true", help="replace an existing --out")
    _add_trust_args(x)

    pb = sub.add_parser("publish", help="publish a signed bundle to a store's "
                                        "models/<name>/<version>/ with release notes")
    pb.add_argument("bundle")
    pb.add_argument("--store", required=True, help="file:///path or a directory")
    pb.add_argument("--force", action="store_true", help="replace an already published version")
    pb.add_argument("--notes", default="", help="extra text for RELEASE.md")
    _add_trust_args(pb)

    cp = sub.add_parser("compact", help="compact the synced ingest tree of a store into "
                                        "Hive-partitioned Parquet (<out>/<table>/device=/date=/)")
    cp.add_argument("--store", required=True, help="file:///path, s3://bucket/prefix or a directory")
    cp.add_argument("--out", required=True, help="output folder")
    cp.add_argument("--device", action="append", default=None, help="only this device (repeatable)")

    k = sub.add_parser("keygen", help="create an Ed25519 signing key pair")
    k.add_argument("--dir", required=True)

    v = sub.add_parser("verify", help="load a bundle with every check and print its summary")
    v.add_argument("bundle")
    v.add_argument("--trusted", action="append", default=[], help="public key (repeatable)")
    v.add_argument("--allow-unsigned", action="store_true")

    s = sub.add_parser("sign", help="(re-)sign an existing bundle")
    s.add_argument("bundle")
    s.add_argument("--key", required=True)
    return p


def _add_trust_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trusted", action="append", default=[], help="public key (repeatable)")
    p.add_argument("--key", help="signing key (its public half is trusted; re-signs with "
                                 "--update-bundle)")
    p.add_argument("--allow-unsigned", action="store_true", help="accept an unsigned bundle")


def _params(a: argparse.Namespace) -> dict:
    out: dict = {}
    if a.n_estimators is not None:
        out["n_estimators"] = a.n_estimators
    if a.n_components is not None:
        out["n_components"] = a.n_components if a.n_components < 1 else int(a.n_components)
    if a.pca_kind is not None:
        out["pca_kind"] = a.pca_kind
    for kv in a.param:
        key, sep, val = kv.partition("=")
        if not sep or not key.strip():
            raise SensormlError(f"--param: {kv!r} is not KEY=VALUE")
        out[key.strip()] = _value(val.strip())
    return out


def _value(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _fit_input(a: argparse.Namespace):
    """The healthy FeatureTable for ``fit`` from whichever source was given."""
    from training import data
    from training.fit import load_features, load_table

    if a.features or a.feature_table:
        return load_features(a.features) if a.features else load_table(a.feature_table, a.spec)
    if a.healthy_rows and a.healthy_time:
        raise SensormlError("--healthy-rows and --healthy-time: give one of them")
    if a.table:
        with step(f"reading {a.table}"):
            src = data.TableSource(
                a.table, time_column=a.time_column, columns=_csv_list(a.columns),
                delimiter=a.delimiter, lags=_int_list(a.lags, "--lags"), rolling=a.rolling,
                rolling_stats=tuple(_csv_list(a.rolling_stats) or ()),
                include_values=not a.no_values, nan=a.nan)
            frame = src.features()
        if src.filled:
            print(f"{src.table.source}: filled {src.filled} missing value(s) (forward fill, "
                  "then the column's median)", file=sys.stderr)
    else:
        spec = _spec_arg(a.spec)
        if a.ingest:
            from training.ingest import IngestSource

            with step(f"reading {a.ingest}"):
                isrc = IngestSource(a.ingest, device=a.device, feature_spec=spec)
                frame = isrc.features()
            if not (a.healthy_rows or a.healthy_time):
                mask, how = isrc.healthy_mask(frame)
                table = data.healthy_table(frame, mask, a.model, how)
                print(f"{len(table.X)} healthy rows × {len(table.names)} features: {how}",
                      file=sys.stderr)
                return table
        else:
            with step(f"reading {a.buffer}"):
                frame = data.BufferSource(a.buffer, spec).features()
    n = len(frame)
    if a.healthy_rows:
        how = f"--healthy-rows {a.healthy_rows}"
        mask = data.rows_mask(data.parse_row_ranges(a.healthy_rows, n), n)
    elif a.healthy_time:
        if a.table and not a.time_column:
            raise SensormlError("--healthy-time needs --time-column (or use --healthy-rows)")
        how = f"--healthy-time {a.healthy_time}"
        mask = data.ranges_mask(data.parse_time_ranges(a.healthy_time), frame.t)
    else:
        how, mask = "the whole input (no --healthy-rows/--healthy-time)", np.ones(n, bool)
    table = data.healthy_table(frame, mask, a.model, how)
    print(f"{len(table.X)} healthy rows × {len(table.names)} features from {how}",
          file=sys.stderr)
    return table


def _spec_arg(path: str | None) -> dict | None:
    """``--spec``: a JSON feature spec, or a bundle folder (its manifest's spec and names)."""
    if not path:
        return None
    import json

    p = Path(path)
    f = p / "manifest.json" if p.is_dir() else p
    try:
        d = json.loads(f.read_text())
    except OSError as e:
        raise SensormlError(f"--spec: {f}: {e.strerror}") from None
    except ValueError as e:
        raise SensormlError(f"--spec: {f}: not JSON: {e}") from None
    if "feature_spec" in d:  # a manifest
        spec = dict(d["feature_spec"])
        spec.setdefault("names", list(d.get("feature_names") or []))
        return spec
    return d


def cmd_fit(a: argparse.Namespace) -> int:
    from training.fit import fit_bundle

    if a.key is None and not a.unsigned:
        raise SensormlError("--key: required to sign the bundle (or pass --unsigned for tests)")
    if not 0.05 <= a.holdout <= 0.5:
        raise SensormlError(f"--holdout: {a.holdout} is not in 0.05..0.5")
    if a.name is None:
        src = a.table or a.features or a.buffer or a.feature_table or a.device or "lake"
        a.name = re.sub(r"[^A-Za-z0-9._+-]", "-", Path(src).name.split(".")[0]) or "model"
    if a.version is None:
        a.version = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    table = _fit_input(a)
    anomalies = None
    if a.anomalies:
        with np.load(a.anomalies, allow_pickle=False) as z:
            if "X" not in z.files:
                raise SensormlError(f"{a.anomalies}: no array 'X' (have {', '.join(z.files)})")
            anomalies = np.asarray(z["X"], np.float32)
    with step(f"fitting {a.model} on {len(table.X)} rows, calibrating, exporting, signing"):
        r = fit_bundle(table, model=a.model, out=a.out, key=a.key, name=a.name,
                       version=a.version, holdout=a.holdout, random_state=a.seed,
                       anomalies=anomalies, **_params(a))
    th = r.manifest["thresholds"]
    print(f"bundle {r.bundle_path}: {a.name} {a.version}, {r.manifest['model_family']}, "
          f"{r.manifest['n_features']} features, {r.manifest['training']['rows']} rows")
    print(f"thresholds warn={th['warn']:.6g} alarm={th['alarm']:.6g} trip={th['trip']:.6g}")
    print(f"parity on {r.parity['rows']} held-out rows: max abs diff {r.parity['max_abs_diff']:.3g}, "
          f"{r.parity['mismatches']} mismatches")
    print("signed" if a.key else "UNSIGNED (gateways refuse it unless allow_unsigned = true)")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from training.evalcmd import run_evaluate

    return run_evaluate(a, step)


def cmd_export(a: argparse.Namespace) -> int:
    from training.publish import export_bundle, trust_from_args

    out = export_bundle(a.bundle, a.out, force=a.force, **trust_from_args(a))
    print(f"exported {a.bundle} -> {out} (signed bytes unchanged, verified)")
    return 0


def cmd_publish(a: argparse.Namespace) -> int:
    from training.publish import describe, publish, trust_from_args

    with step(f"publishing {a.bundle} to {a.store}"):
        target = publish(a.bundle, a.store, force=a.force, notes=a.notes, **trust_from_args(a))
    print(f"published {describe(target)}")
    return 0


def cmd_keygen(a: argparse.Namespace) -> int:
    from sensorml.bundles.signing import fingerprint, keygen, load_public_key

    priv, pub = keygen(a.dir)
    print(f"private key {priv} (mode 0600; keep it on the training side)")
    print(f"public key  {pub} fingerprint {fingerprint(load_public_key(pub))}")
    return 0


def cmd_verify(a: argparse.Namespace) -> int:
    from sensorml.bundles.bundle import load_bundle
    from sensorml.edge.scorer import Scorer

    b = load_bundle(a.bundle, trusted_keys=a.trusted, allow_unsigned=a.allow_unsigned)
    Scorer(b)
    m = b.manifest
    print(f"ok {b.path}: {m.name} {m.version} ({m.model_family}, {m.n_features} features), "
          f"signed by {b.signed_by or 'nobody (unsigned)'}; thresholds {m.thresholds}")
    return 0


def cmd_sign(a: argparse.Namespace) -> int:
    from sensorml.bundles.bundle import load_bundle, write_bundle

    b = load_bundle(a.bundle, trusted_keys=[], allow_unsigned=True)
    write_bundle(Path(a.bundle), b.manifest.to_dict(), b.model_bytes, a.key)
    print(f"signed {a.bundle}")
    return 0


def cmd_compact(a: argparse.Namespace) -> int:
    from training.ingest import compact

    counts = compact(a.store, a.out, devices=tuple(a.device) if a.device else None)
    print(f"compacted into {a.out}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return 0


COMMANDS = {"fit": cmd_fit, "evaluate": cmd_evaluate, "export": cmd_export,
            "publish": cmd_publish, "keygen": cmd_keygen, "verify": cmd_verify, "sign": cmd_sign,
            "compact": cmd_compact}


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 2 a user's mistake)."""
    global _QUIET
    try:
        a = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # --help or a usage error
        return int(e.code or 0)
    _QUIET = a.quiet
    try:
        return COMMANDS[a.command](a)
    except (SensormlError, OSError) as e:
        print(f"training {a.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
