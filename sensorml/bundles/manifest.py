"""The bundle's manifest: every field checked into a frozen :class:`Manifest`, and what
differs between the features a bundle expects and those a config produces.

A problem is a :class:`~sensorml.errors.BundleFormatError` naming the field, e.g.
``manifest.json: thresholds must satisfy warn <= alarm <= trip, got 0.3, 0.2, 0.1``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sensorml.bundles.files import MANIFEST
from sensorml.errors import BundleFormatError

__all__ = ["FORMAT_VERSION", "SCORE_DIRECTION", "REQUIRED", "Manifest", "spec_differences"]

FORMAT_VERSION = 1
SCORE_DIRECTION = "higher_is_anomalous"

#: the fields every manifest holds, with their JSON types
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "name": str,
    "version": (str, int),
    "created": str,
    "feature_spec": dict,
    "input_name": str,
    "output_name": str,
    "score_direction": str,
    "thresholds": dict,
    "threshold_method": str,
    "fingerprint": dict,
    "metrics": dict,
    "model_sha256": str,
    "model_family": str,
    "n_features": int,
    "training": dict,
}


@dataclass(frozen=True)
class Manifest:
    """The parsed, checked ``manifest.json``. Unknown fields are kept in ``extra``."""

    format_version: int
    name: str
    version: str
    created: str
    feature_spec: dict
    input_name: str
    output_name: str
    score_direction: str
    thresholds: dict
    threshold_method: str
    fingerprint: dict
    metrics: dict
    model_sha256: str
    model_family: str
    n_features: int
    training: dict
    feature_names: tuple[str, ...] = ()
    #: optional: what a gateway needs to run this bundle, e.g. ``{"sensorml": "0.2.0",
    #: "feature_code_version": "1"}`` (checked by :mod:`sensorml.bundles.staging` before staging)
    requires: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, where: str = MANIFEST) -> Manifest:
        """Check every field; a problem raises :class:`BundleFormatError` naming it."""
        if not isinstance(d, dict):
            raise BundleFormatError(f"{where}: expected a JSON object, got {type(d).__name__}")
        for key, typ in REQUIRED.items():
            if key not in d:
                raise BundleFormatError(f"{where}: missing field '{key}'")
            v = d[key]
            if not isinstance(v, typ) or isinstance(v, bool):
                want = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
                raise BundleFormatError(f"{where}: field '{key}' must be {want}, got {v!r:.60}")
        if d["format_version"] != FORMAT_VERSION:
            raise BundleFormatError(f"{where}: format_version {d['format_version']} is not supported "
                                    f"(this sensorml reads {FORMAT_VERSION}); upgrade the gateway")
        if d["score_direction"] != SCORE_DIRECTION:
            raise BundleFormatError(f"{where}: score_direction must be '{SCORE_DIRECTION}', "
                                    f"got {d['score_direction']!r}")
        th = d["thresholds"]
        for k in ("warn", "alarm", "trip"):
            v = th.get(k)
            if not isinstance(v, int | float) or isinstance(v, bool) or v != v:
                raise BundleFormatError(f"{where}: thresholds.{k} must be a number, got {v!r}")
        if not th["warn"] <= th["alarm"] <= th["trip"]:
            raise BundleFormatError(f"{where}: thresholds must satisfy warn <= alarm <= trip, got "
                                    f"{th['warn']}, {th['alarm']}, {th['trip']}")
        sha = d["model_sha256"]
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise BundleFormatError(f"{where}: model_sha256 must be 64 lowercase hex digits")
        if d["n_features"] < 1:
            raise BundleFormatError(f"{where}: n_features must be >= 1, got {d['n_features']}")
        names = d.get("feature_names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise BundleFormatError(f"{where}: feature_names must be a list of strings")
        if names and len(names) != d["n_features"]:
            raise BundleFormatError(f"{where}: {len(names)} feature_names but n_features is "
                                    f"{d['n_features']}")
        requires = d.get("requires", {})
        if not isinstance(requires, dict):
            raise BundleFormatError(f"{where}: requires must be an object, got {requires!r:.60}")
        known = set(REQUIRED) | {"feature_names", "requires"}
        fields = {k: d[k] for k in REQUIRED}
        fields["version"] = str(d["version"])
        return cls(**fields, feature_names=tuple(names), requires=dict(requires),
                   extra={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in REQUIRED}
        if self.feature_names:
            d["feature_names"] = list(self.feature_names)
        if self.requires:
            d["requires"] = dict(self.requires)
        return {**self.extra, **d}


def spec_differences(bundle_spec: dict, bundle_names: tuple[str, ...] | list[str],
                     expected: Any) -> list[str]:
    """What differs between the bundle's feature spec and the expected one, one text each.

    >>> spec_differences({"sample_rate": 25600, "names": ["a", "b"]}, (),
    ...                  {"sample_rate": 12800, "names": ["a"]})
    ['bundle expects 2 features, config produces 1: missing b', 'sample_rate: bundle 25600, config 12800']
    """
    exp = _plain(expected.to_dict() if hasattr(expected, "to_dict") else dict(expected))
    got = _plain(bundle_spec)
    names_b = list(bundle_names) or _names_of(got)
    names_e = _names_of(exp, expected)
    out = []
    if names_b is not None and names_e is not None and names_b != names_e:
        if len(names_b) != len(names_e) or set(names_b) != set(names_e):
            missing = [n for n in names_b if n not in set(names_e)]
            extra = [n for n in names_e if n not in set(names_b)]
            text = f"bundle expects {len(names_b)} features, config produces {len(names_e)}"
            parts = ([f"missing {_few(missing)}"] if missing else []) + \
                    ([f"unexpected {_few(extra)}"] if extra else [])
            out.append(text + (": " + "; ".join(parts) if parts else ""))
        else:
            i = next(i for i, (a, b) in enumerate(zip(names_b, names_e)) if a != b)
            out.append(f"feature order differs at #{i}: bundle {names_b[i]}, config {names_e[i]}")
    for k in sorted(set(got) | set(exp)):
        if k == "names" or got.get(k) == exp.get(k):
            continue
        out.append(f"{k}: bundle {_fmt(got.get(k, '(absent)'))}, config {_fmt(exp.get(k, '(absent)'))}")
    return out


def _few(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def _plain(d: dict) -> dict:
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, tuple | set) else str(o)))


def _names_of(d: dict, spec_obj: Any = None) -> list[str] | None:
    if spec_obj is not None and callable(getattr(spec_obj, "names", None)):
        return list(spec_obj.names())
    if isinstance(d.get("names"), list):
        return list(d["names"])
    try:  # the features module knows how to derive names from a spec dict
        from sensorml.edge.features import FeatureSpec

        return list(FeatureSpec.from_dict(d).names())
    except Exception:  # noqa: BLE001 - no features module or a foreign spec: skip names
        return None


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return json.dumps(v) if isinstance(v, dict | list) else str(v)
