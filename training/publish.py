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

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from sensorml.bundle import MANIFEST, MODEL, SIGNATURE, Bundle, load_bundle, unpack_bundle
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
        from sensorml.signing import load_private_key

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
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not force:
        raise ConfigError(f"{target}: version already published (versions are immutable; "
                          "publish a new version, or --force to replace it)")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        old = None
        if force and target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise ConfigError(f"{target}: version was published meanwhile by someone else "
                                  "(versions are immutable)") from None
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(p: Path) -> None:
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    files = _bundle_files(b)
    if d.name.endswith((".tar.gz", ".tgz")):
        import io
        import tarfile

        d.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tf.addfile(info, io.BytesIO(data))
        fd, tmp = tempfile.mkstemp(dir=d.parent, prefix=f".{d.name}.tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d)
    else:
        _write_dir_atomic(d, files, force)
    load_bundle(d, trusted_keys=list(trusted_keys), allow_unsigned=allow_unsigned)
    return d


def describe(path: Path) -> str:
    """One line for the CLI: where and which files."""
    return f"{path}: " + ", ".join(sorted(p.name for p in path.iterdir()))
