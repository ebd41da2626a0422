"""``training fit``: pick the healthy rows from whichever input was given (a ``sensorml
learn`` file, a plant table, a gateway buffer, a feature table, a synced store), fit,
calibrate, export, sign, and say what was written.

``--spec`` (for inputs that do not carry their feature spec) is a JSON spec, or a bundle
(folder or ``.tar.gz``) whose manifest gives it: the model the data was scored by.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

from sensorml.errors import SensormlError

__all__ = ["run_fit", "spec_arg", "csv_list"]


def csv_list(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _int_list(text: str | None, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in csv_list(text) or [])
    except ValueError:
        raise SensormlError(f"{what}: {text!r} is not a list of whole numbers like 1,2,5") from None


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


def spec_arg(path: str | None) -> dict | None:
    """``--spec``: a JSON feature spec, or a bundle folder or ``.tar.gz`` (its manifest's
    ``feature_spec``, with its ``feature_names`` as ``names``)."""
    if not path:
        return None
    p = Path(path)
    if p.is_dir() or (p.is_file() and tarfile.is_tarfile(p)):
        from sensorml.bundles.bundle import load_bundle

        # the spec describes the data; nothing of the bundle is run, so no signature check
        m = load_bundle(p, trusted_keys=[], allow_unsigned=True).manifest
        spec = dict(m.feature_spec)
        if m.feature_names:
            spec["names"] = list(m.feature_names)
        return spec
    try:
        d = json.loads(p.read_text())
    except OSError as e:
        raise SensormlError(f"--spec: {p}: {e.strerror}") from None
    except ValueError as e:
        raise SensormlError(f"--spec: {p}: not JSON: {e}") from None
    if not isinstance(d, dict):
        raise SensormlError(f"--spec: {p}: expected a JSON object (a feature spec), got "
                            f"{type(d).__name__}")
    if "feature_spec" in d:  # a manifest.json on its own
        spec = dict(d["feature_spec"])
        spec.setdefault("names", list(d.get("feature_names") or []))
        return spec
    return d


def _feature_table(a: argparse.Namespace):
    from training.fit import load_table

    table = load_table(a.feature_table)
    spec = spec_arg(a.spec)
    if spec is None:
        return table
    names = list(spec.get("names") or [])
    if names and names != list(table.names):
        raise SensormlError(f"--spec: {a.spec} names {len(names)} features "
                            f"({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}) but "
                            f"{a.feature_table} has columns {', '.join(table.names[:4])}"
                            f"{', ...' if len(table.names) > 4 else ''}")
    return dataclasses.replace(table, feature_spec={**spec, "names": list(table.names)})


def _fit_input(a: argparse.Namespace, step):
    """The healthy FeatureTable for ``fit`` from whichever source was given."""
    from training import data
    from training.fit import load_features

    if a.features:
        return load_features(a.features)
    if a.feature_table:
        return _feature_table(a)
    if a.healthy_rows and a.healthy_time:
        raise SensormlError("--healthy-rows and --healthy-time: give one of them")
    if a.table:
        with step(f"reading {a.table}"):
            src = data.TableSource(
                a.table, time_column=a.time_column, columns=csv_list(a.columns),
                delimiter=a.delimiter, lags=_int_list(a.lags, "--lags"), rolling=a.rolling,
                rolling_stats=tuple(csv_list(a.rolling_stats) or ()),
                include_values=not a.no_values, nan=a.nan)
            frame = src.features()
        if src.filled:
            print(f"{src.table.source}: filled {src.filled} missing value(s) (forward fill, "
                  "then the column's median)", file=sys.stderr)
    else:
        spec = spec_arg(a.spec)
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


def run_fit(a: argparse.Namespace, step) -> int:
    """The ``fit`` command; *step* is the progress context manager of the command line."""
    from training.fit import fit_bundle

    a.model = str(a.model)  # the default is resolved lazily (see training.cli)
    if a.key is None and not a.unsigned:
        raise SensormlError("--key: required to sign the bundle (or pass --unsigned for tests)")
    if not 0.05 <= a.holdout <= 0.5:
        raise SensormlError(f"--holdout: {a.holdout} is not in 0.05..0.5")
    if a.name is None:
        src = a.table or a.features or a.buffer or a.feature_table or a.device or "lake"
        a.name = re.sub(r"[^A-Za-z0-9._+-]", "-", Path(src).name.split(".")[0]) or "model"
    if a.version is None:
        a.version = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    table = _fit_input(a, step)
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
