"""The training commands: ``sensorml train ...``, and the same tree as the ``training``
command (:func:`main`).

:func:`add_arguments` mounts them on any parser; it imports no scikit-learn, scipy,
skl2onnx or onnx (each command imports what it needs when it runs), and
:func:`missing_extra` says in one line when the ``[train]`` extra is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from contextlib import contextmanager

__all__ = ["add_arguments", "main", "missing_extra", "EXTRA_MODULES"]

#: what ``pip install 'sensorml[train]'`` adds that every training command relies on
EXTRA_MODULES = ("sklearn", "scipy", "skl2onnx", "onnx")

DESCRIPTION = """\
Offline training: fit a model on healthy data, calibrate its thresholds, export it
to ONNX checked against scikit-learn, sign it; evaluate it against labelled faults;
publish it to a cloud store."""

EPILOG = """\
examples:
  %(prog)s fit --features build/healthy.npz --key keys/signing.key \\
      --name pump --version 3 --out bundles/pump-3
  %(prog)s fit --table run.csv --time-column t --columns a,b,c --healthy-rows 0:400 \\
      --key keys/signing.key --name pump --version 3 --out bundles/pump-3
  %(prog)s evaluate --bundle bundles/pump-3 --key keys/signing.key --table run.csv \\
      --fault-rows 400: --out reports/pump-3 --update-bundle
  %(prog)s publish bundles/pump-3 --store file:///srv/cloud --key keys/signing.key
  %(prog)s export bundles/pump-3 --out pump-3.tar.gz --key keys/signing.key
  %(prog)s verify bundles/pump-3 --trusted keys/signing.pub
  %(prog)s sign bundles/pump-3 --key keys/signing.key

Keys come from `sensorml keygen --dir keys`. A mistake is one line on stderr and exit
status 2; progress of the long steps goes to stderr (--quiet silences it).
"""


def missing_extra(prog: str = "training") -> str | None:
    """The line to print when a module of the ``[train]`` extra cannot be imported, else None."""
    for name in EXTRA_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return (f"{prog} needs the [train] extra: pip install 'sensorml[train]' "
                    f"({name} is not installed)")
    return None


def main(argv: list[str] | None = None) -> int:
    """The ``training`` command; returns the exit status (0 ok, 2 a user's mistake)."""
    from sensorml.cli.tree import finish, run

    p = argparse.ArgumentParser(prog="training")
    add_arguments(p)
    return run(finish(p), sys.argv[1:] if argv is None else list(argv),
               lambda: missing_extra("training"))


class _Families:
    """The model families (:data:`training.models.FAMILIES`), looked up when argparse first
    checks or lists them: only once the extra was found, never while building the parser."""

    def __iter__(self):
        from training.models import FAMILIES

        return iter(FAMILIES)

    def __contains__(self, name: object) -> bool:
        return name in list(self)


class _DefaultFamily:
    """``training.fit.DEFAULT_MODEL``, read when the help or the fit command needs it."""

    def __str__(self) -> str:
        from training.fit import DEFAULT_MODEL

        return DEFAULT_MODEL


def _progress(quiet: bool):
    @contextmanager
    def step(text: str):
        """Print ``text …`` then the time it took, on stderr (a long step's progress)."""
        t0 = time.perf_counter()
        if not quiet:
            print(f"{text} …", file=sys.stderr, flush=True)
        yield
        if not quiet:
            print(f"  done in {time.perf_counter() - t0:.2f} s", file=sys.stderr, flush=True)

    return step


def _table_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--time-column", help="column of times (numbers or ISO timestamps)")
    p.add_argument("--delimiter", help="CSV delimiter (default: sniffed)")


def _trust_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trusted", action="append", default=[], help="public key (repeatable)")
    p.add_argument("--key", help="signing key (its public half is trusted; re-signs with "
                                 "--update-bundle)")
    p.add_argument("--allow-unsigned", action="store_true", help="accept an unsigned bundle")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Mount the training subcommands on *p* (``sensorml train`` or ``training``)."""
    p.description, p.epilog = DESCRIPTION, EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    sub = p.add_subparsers(dest="train_command", required=True, metavar="COMMAND")

    def add(name: str, fn, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    f = add("fit", cmd_fit, "Fit on healthy rows, calibrate thresholds, export to ONNX, "
                            "sign, write a bundle.")
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
    f.add_argument("--spec", metavar="SPEC",
                   help="feature spec for --feature-table/--buffer/--ingest: a JSON spec, or a "
                        "bundle (folder or .tar.gz) whose manifest gives it (the model the data "
                        "was scored by)")
    _table_args(f)
    f.add_argument("--columns", help="table columns to use, a,b,c (default: every numeric one)")
    f.add_argument("--healthy-rows", help="healthy rows, e.g. 0:400 or 0:400,900:")
    f.add_argument("--healthy-time", help="healthy time span(s), e.g. 2024-01-01T00:00..2024-01-02T00:00")
    f.add_argument("--lags", help="table: lagged values, e.g. 1,2,5 rows back")
    f.add_argument("--rolling", type=int, default=0, help="table: rolling window of k rows (>= 2)")
    f.add_argument("--rolling-stats", default="mean,std,slope", help="of mean,std,slope")
    f.add_argument("--no-values", action="store_true", help="table: leave the raw values out")
    f.add_argument("--nan", choices=("reject", "fill"), default="reject",
                   help="missing values: reject (default) or forward fill then column median")
    f.add_argument("--model", choices=_Families(), default=_DefaultFamily(), metavar="FAMILY",
                   help="model family: %(choices)s (default %(default)s)")
    f.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a model family parameter (repeatable)")
    f.add_argument("--out", required=True, help="bundle directory (or .tar.gz) to write")
    f.add_argument("--key", help="Ed25519 private key PEM to sign with")
    f.add_argument("--unsigned", action="store_true", help="write without a signature (tests only)")
    f.add_argument("--name", help="model name (default: the input file's stem)")
    f.add_argument("--version", help="model version (default: the UTC time, YYYYMMDDhhmmss)")
    f.add_argument("--holdout", type=float, default=0.25, help="share of rows held out (default 0.25)")
    f.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    f.add_argument("--n-estimators", type=int, help="iforest: trees")
    f.add_argument("--n-components", type=float,
                   help="PCA: components, or the share of variance to keep if < 1")
    f.add_argument("--pca-kind", help="PCA statistic (e.g. spe, t2)")
    f.add_argument("--anomalies", metavar="A.npz", help="known-bad rows (X) to report detection rates")

    e = add("evaluate", cmd_evaluate, "Score labelled data with a bundle: precision, recall, "
                                      "delays, false alarms; plots.")
    e.add_argument("--bundle", required=True, help="bundle directory or .tar.gz")
    es = e.add_mutually_exclusive_group(required=True)
    es.add_argument("--table", help="CSV or Parquet with the bundle's columns")
    es.add_argument("--buffer", help="a gateway's buffer.db")
    _table_args(e)
    lab = e.add_mutually_exclusive_group()
    lab.add_argument("--fault-rows", help="faulty rows, e.g. 160:960")
    lab.add_argument("--fault-time", help="faulty time span(s), a..b[,c..d]")
    lab.add_argument("--labels", help="CSV with start,end[,label] (times) or start_row,end_row")
    e.add_argument("--out", help="report directory (evaluation.json, scores.png, report.html)")
    e.add_argument("--update-bundle", action="store_true",
                   help="write the evaluation into the manifest's metrics and re-sign (needs --key)")
    _trust_args(e)
    e.add_argument("--k", type=int, default=3, help="decider k of n (gateway default 3)")
    e.add_argument("--n", type=int, default=5, help="decider n (gateway default 5)")
    e.add_argument("--hysteresis", type=float, default=0.1, help="decider hysteresis (0.1)")

    x = add("export", cmd_export, "Convert a bundle: directory <-> .tar.gz archive (signed "
                                  "bytes unchanged).")
    x.add_argument("bundle", help="bundle directory or .tar.gz")
    x.add_argument("--out", required=True, help="a .tar.gz path, or a directory")
    x.add_argument("--force", action="store_true", help="replace an existing --out")
    _trust_args(x)

    pb = add("publish", cmd_publish, "Publish a signed bundle to a store's "
                                     "models/<name>/<version>/ with release notes.")
    pb.add_argument("bundle", help="bundle directory or .tar.gz")
    pb.add_argument("--store", required=True, help="file:///path or a directory")
    pb.add_argument("--force", action="store_true", help="replace an already published version")
    pb.add_argument("--notes", default="", help="extra text for RELEASE.md")
    _trust_args(pb)

    cp = add("compact", cmd_compact, "Compact the synced ingest/ tree of a store into "
                                     "Hive-partitioned Parquet (<out>/<table>/device=/date=/).")
    cp.add_argument("--store", required=True, help="file:///path, s3://bucket/prefix or a directory")
    cp.add_argument("--out", required=True, help="output folder")
    cp.add_argument("--device", action="append", default=None, help="only this device (repeatable)")

    v = add("verify", cmd_verify, "Load a bundle with every check and print its summary.")
    v.add_argument("bundle", help="bundle directory or .tar.gz")
    v.add_argument("--trusted", action="append", default=[], help="public key (repeatable)")
    v.add_argument("--allow-unsigned", action="store_true", help="accept an unsigned bundle")

    s = add("sign", cmd_sign, "(Re-)sign an existing bundle.")
    s.add_argument("bundle", help="bundle directory")
    s.add_argument("--key", required=True, help="Ed25519 private key PEM")


def cmd_fit(a: argparse.Namespace) -> int:
    from training.fitcmd import run_fit

    return run_fit(a, _progress(a.quiet))


def cmd_evaluate(a: argparse.Namespace) -> int:
    from training.evalcmd import run_evaluate

    return run_evaluate(a, _progress(a.quiet))


def cmd_export(a: argparse.Namespace) -> int:
    from training.publish import export_bundle, trust_from_args

    out = export_bundle(a.bundle, a.out, force=a.force, **trust_from_args(a))
    print(f"exported {a.bundle} -> {out} (signed bytes unchanged, verified)")
    return 0


def cmd_publish(a: argparse.Namespace) -> int:
    from training.publish import describe, publish, trust_from_args

    with _progress(a.quiet)(f"publishing {a.bundle} to {a.store}"):
        target = publish(a.bundle, a.store, force=a.force, notes=a.notes, **trust_from_args(a))
    print(f"published {describe(target)}")
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
    from pathlib import Path

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


if __name__ == "__main__":
    sys.exit(main())
