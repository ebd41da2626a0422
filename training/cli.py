"""``training``: fit, sign and check model bundles from the command line.

    training fit --features healthy.npz --model iforest --out bundles/pump-3 \\
                 --key keys/signing.key --name pump --version 3
    training keygen --dir keys
    training verify bundles/pump-3 --trusted keys/signing.pub
    training sign bundles/pump-3 --key keys/signing.key

A user's mistake is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sensorml.errors import SensormlError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="training", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit on healthy features, calibrate, export, sign, write a bundle")
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", metavar="F.npz", help="written by `sensorml learn` (X, names, feature_spec)")
    src.add_argument("--table", metavar="T.csv", help="CSV: header of feature names, one row per window")
    f.add_argument("--spec", metavar="SPEC.json", help="feature spec for --table (default: names only)")
    f.add_argument("--model", choices=("iforest", "pca"), default="iforest")
    f.add_argument("--out", required=True, help="bundle directory (or .tar.gz) to write")
    f.add_argument("--key", help="Ed25519 private key PEM to sign with")
    f.add_argument("--unsigned", action="store_true", help="write without a signature (tests only)")
    f.add_argument("--name", required=True)
    f.add_argument("--version", required=True)
    f.add_argument("--holdout", type=float, default=0.25, help="share of rows held out (default 0.25)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--n-estimators", type=int, default=100)
    f.add_argument("--n-components", type=float, default=0.95,
                   help="PCA: components, or the share of variance to keep if < 1 (default 0.95)")
    f.add_argument("--pca-kind", choices=("spe", "t2"), default="spe")
    f.add_argument("--anomalies", metavar="A.npz", help="known-bad rows (X) to report detection rates")

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


def cmd_fit(a: argparse.Namespace) -> int:
    from training.fit import fit_bundle, load_features, load_table

    if a.key is None and not a.unsigned:
        raise SensormlError("--key: required to sign the bundle (or pass --unsigned for tests)")
    if not 0.05 <= a.holdout <= 0.5:
        raise SensormlError(f"--holdout: {a.holdout} is not in 0.05..0.5")
    table = load_features(a.features) if a.features else load_table(a.table, a.spec)
    anomalies = None
    if a.anomalies:
        with np.load(a.anomalies, allow_pickle=False) as z:
            if "X" not in z.files:
                raise SensormlError(f"{a.anomalies}: no array 'X' (have {', '.join(z.files)})")
            anomalies = np.asarray(z["X"], np.float32)
    nc = a.n_components if a.n_components < 1 else int(a.n_components)
    r = fit_bundle(table, model=a.model, out=a.out, key=a.key, name=a.name, version=a.version,
                   holdout=a.holdout, random_state=a.seed, anomalies=anomalies,
                   n_estimators=a.n_estimators, n_components=nc, pca_kind=a.pca_kind)
    th = r.manifest["thresholds"]
    print(f"bundle {r.bundle_path}: {a.name} {a.version}, {r.manifest['model_family']}, "
          f"{r.manifest['n_features']} features, {r.manifest['training']['rows']} rows")
    print(f"thresholds warn={th['warn']:.6g} alarm={th['alarm']:.6g} trip={th['trip']:.6g}")
    print(f"parity on {r.parity['rows']} held-out rows: max abs diff {r.parity['max_abs_diff']:.3g}, "
          f"{r.parity['mismatches']} mismatches")
    print("signed" if a.key else "UNSIGNED (gateways refuse it unless allow_unsigned = true)")
    return 0


def cmd_keygen(a: argparse.Namespace) -> int:
    from sensorml.signing import fingerprint, keygen, load_public_key

    priv, pub = keygen(a.dir)
    print(f"private key {priv} (mode 0600; keep it on the training side)")
    print(f"public key  {pub} fingerprint {fingerprint(load_public_key(pub))}")
    return 0


def cmd_verify(a: argparse.Namespace) -> int:
    from sensorml.bundle import load_bundle
    from sensorml.scorer import Scorer

    b = load_bundle(a.bundle, trusted_keys=a.trusted, allow_unsigned=a.allow_unsigned)
    Scorer(b)
    m = b.manifest
    print(f"ok {b.path}: {m.name} {m.version} ({m.model_family}, {m.n_features} features), "
          f"signed by {b.signed_by or 'nobody (unsigned)'}; thresholds {m.thresholds}")
    return 0


def cmd_sign(a: argparse.Namespace) -> int:
    from sensorml.bundle import load_bundle, write_bundle

    b = load_bundle(a.bundle, trusted_keys=[], allow_unsigned=True)
    write_bundle(Path(a.bundle), b.manifest.to_dict(), b.model_bytes, a.key)
    print(f"signed {a.bundle}")
    return 0


COMMANDS = {"fit": cmd_fit, "keygen": cmd_keygen, "verify": cmd_verify, "sign": cmd_sign}


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 2 a user's mistake)."""
    try:
        a = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # --help or a usage error
        return int(e.code or 0)
    try:
        return COMMANDS[a.command](a)
    except (SensormlError, OSError) as e:
        print(f"training {a.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
