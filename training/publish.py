"""Publish a signed bundle into a model store, and export bundles between forms.

:func:`publish` copies a verified bundle, byte for byte (the signature stays valid), to
``<store>/models/<name>/<version>/{manifest.json,model.onnx,manifest.sig,RELEASE.md}``.
The store is a ``file://`` URL or a plain directory (the same layout, so a sync job or a
gateway can point at it). ``RELEASE.md`` holds the release notes built from the
manifest: model family, thresholds and how they were set, the evaluation in
``metrics["evaluation"]``, the training data's sha256 and fingerprint summary.

Versions are immutable: an existing ``models/<name>/<version>`` is refused unless
``force``. The write is atomic: the files go to a temporary directory beside the
target, which is then renamed into place (a rename onto an existing version fails, so
two publishers racing for one version cannot both win).

:func:`export_bundle` converts a bundle directory to a ``.tar.gz`` archive or back,
verifying it first and keeping the signed bytes unchanged.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from sensorml.bundles.bundle import (
    MANIFEST,
    MODEL,
    SIGNATURE,
    Bundle,
    load_bundle,
    unpack_bundle,
    write_files,
)
from sensorml.errors import ConfigError

__all__ = ["store_root", "version_dir", "release_notes", "publish", "export_bundle",
           "trusted_from"]

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def store_root(url: str | os.PathLike) -> Path:
    """The local root of a store given as ``file:///path`` or a directory path.

    >>> str(store_root("file:///srv/cloud")), str(store_root("/srv/cloud"))
    ('/srv/cloud', '/srv/cloud')
    """
    s = os.fspath(url)
    if "://" not in s:
        return Path(s)
    u = urlparse(s)
    if u.scheme == "file":
        if u.netloc not in ("", "localhost"):
            raise ConfigError(f"{s}: a file:// URL names a local path (file:///path), "
                              f"not host {u.netloc!r}")
        return Path(unquote(u.path))
    raise ConfigError(f"{s}: store scheme {u.scheme!r} is not supported by publish yet "
                      "(file:// or a directory; S3 comes with the sync job)")


def version_dir(root: Path, name: str, version: str) -> Path:
    for what, v in (("name", name), ("version", version)):
        if not _SAFE.match(v) or v in (".", ".."):
            raise ConfigError(f"manifest {what} {v!r} cannot be a store path component "
                              "(letters, digits, . _ + - only)")
    return root / "models" / name / version


def trusted_from(trusted: list[str] | tuple[str, ...] = (), key: str | None = None) -> list:
    """Trusted keys: the given public keys plus the public half of the signing *key*."""
    out: list = list(trusted)
    if key:
        from sensorml.bundles.signing import load_private_key

        out.append(load_private_key(key).public_key())
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "n/a" if v is None else str(v)


def release_notes(b: Bundle, extra: str = "") -> str:
    """Markdown release notes from the manifest (and its evaluation, when present)."""
    m = b.manifest
    tr = m.training
    lines = [f"# {m.name} {m.version}", "",
             f"- model: {m.model_family}, {m.n_features} features "
             f"(feature spec kind {m.feature_spec.get('kind', 'window')}, feature code "
             f"{m.feature_spec.get('feature_code_version', '?')})",
             f"- created: {m.created}",
             f"- model sha256: {m.model_sha256}",
             f"- signed by: {b.signed_by or 'nobody (UNSIGNED)'}",
             f"- training data: {tr.get('rows', '?')} rows from {tr.get('source') or '?'}, "
             f"sha256 {tr.get('data_sha256', '?')}",
             "- thresholds: " + ", ".join(f"{k} {_fmt(float(m.thresholds[k]))}"
                                  for k in ("warn", "alarm", "trip")),
             f"- threshold method: {m.threshold_method}", ""]
    ev = m.metrics.get("evaluation")
    if isinstance(ev, dict):
        lines += [f"## Evaluation on {ev.get('data', '?')} (labels: {ev.get('labels', '?')})", "",
                  "| level | precision | recall | F1 | false-alarm rate | missed | events "
                  "detected | mean delay (s) | false alarms/h |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for lvl in ("warn", "alarm", "trip"):
            e = ev.get(lvl) or {}
            lines.append(f"| {lvl} | " + " | ".join(_fmt(e.get(k)) for k in (
                "precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate")) +
                f" | {e.get('detected', '?')}/{e.get('events', '?')} | "
                f"{_fmt(e.get('mean_delay_s'))} | {_fmt(e.get('false_alarms_per_hour'))} |")
        lines.append("")
    else:
        lines += ["## Evaluation", "", "None recorded (run `training evaluate --update-bundle`).", ""]
    other = {k: v for k, v in m.metrics.items() if k != "evaluation"}
    if other:
        lines += ["## Fit metrics", ""] + [f"- {k}: {_fmt(v)}" for k, v in sorted(other.items())]
        lines.append("")
    fp = m.fingerprint
    if fp:
        lines += ["## Training data fingerprint (drift reference)", "",
                  "| feature | mean | std | p01 | p99 |", "|---|---|---|---|---|"]
        for name, st in list(fp.items())[:40]:
            lines.append(f"| {name} | " + " | ".join(_fmt(st.get(k)) for k in
                                                    ("mean", "std", "p01", "p99")) + " |")
        if len(fp) > 40:
            lines.append(f"| … {len(fp) - 40} more in manifest.json | | | | |")
        lines.append("")
    if extra:
        lines += ["## Notes", "", extra.strip(), ""]
    return "\n".join(lines)


def _bundle_files(b: Bundle) -> dict[str, bytes]:
    """The exact signed files of a loaded bundle (an archive is unpacked to read them)."""
    files = {MANIFEST: b.manifest_bytes, MODEL: b.model_bytes}
    if b.path.is_dir():
        sig = b.path / SIGNATURE
        if sig.is_file():
            files[SIGNATURE] = sig.read_bytes()
        return files
    with tempfile.TemporaryDirectory() as d:
        sig = unpack_bundle(b.path, Path(d) / "b") / SIGNATURE
        if sig.is_file():
            files[SIGNATURE] = sig.read_bytes()
    return files


def _write_dir_atomic(target: Path, files: dict[str, bytes], force: bool) -> None:
    if target.exists() and not force:
        raise ConfigError(f"{target}: version already published (versions are immutable; "
                          "publish a new version, or --force to replace it)")
    try:
        write_files(target, files, replace=force)
    except FileExistsError:
        raise ConfigError(f"{target}: version was published meanwhile by someone else "
                          "(versions are immutable)") from None


def publish(bundle: str | os.PathLike, store: str | os.PathLike, *, trusted_keys=(),
            allow_unsigned: bool = False, force: bool = False, notes: str = "") -> Path:
    """Verify *bundle* and publish it to *store*; returns the version directory."""
    b = load_bundle(bundle, trusted_keys=list(trusted_keys), allow_unsigned=allow_unsigned)
    m = b.manifest
    target = version_dir(store_root(store), m.name, m.version)
    files = _bundle_files(b)
    files["RELEASE.md"] = release_notes(b, notes).encode()
    _write_dir_atomic(target, files, force)
    return target


def export_bundle(src: str | os.PathLike, dest: str | os.PathLike, *, trusted_keys=(),
                  allow_unsigned: bool = False, force: bool = False) -> Path:
    """Bundle directory → ``.tar.gz`` (or archive → directory), same signed bytes."""
    b = load_bundle(src, trusted_keys=list(trusted_keys), allow_unsigned=allow_unsigned)
    d = Path(dest)
    if d.exists() and not force:
        raise ConfigError(f"{d}: exists; choose another path or --force")
    write_files(d, _bundle_files(b))
    load_bundle(d, trusted_keys=list(trusted_keys), allow_unsigned=allow_unsigned)
    return d


def describe(path: Path) -> str:
    """One line for the CLI: where and which files."""
    return f"{path}: " + ", ".join(sorted(p.name for p in path.iterdir()))


def trust_from_args(a) -> dict:
    """``trusted_keys`` / ``allow_unsigned`` from the ``--trusted``/``--key``/``--allow-unsigned``
    options of the ``training`` commands that verify a bundle."""
    keys = trusted_from(a.trusted, a.key)
    if not keys and not a.allow_unsigned:
        raise ConfigError("--trusted or --key: needed to verify the bundle's signature "
                          "(or --allow-unsigned)")
    return {"trusted_keys": keys, "allow_unsigned": a.allow_unsigned}
