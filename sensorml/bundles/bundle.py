"""Model bundles: a signed manifest plus a compact ONNX model.

A bundle is a directory (or a ``.tar.gz`` of one) holding ``manifest.json``,
``model.onnx`` and ``manifest.sig``. :func:`load_bundle` refuses anything it cannot
trust, each reason its own exception with one line naming the file:

- :class:`BundleFormatError`: missing file, invalid JSON, missing/bad manifest field,
  an archive entry that escapes the directory, a link, or a huge file;
- :class:`BundleSignatureError`: no ``manifest.sig`` (unless ``allow_unsigned``), a
  signature that does not match the exact manifest bytes, or an untrusted signer;
- :class:`BundleHashError`: ``model.onnx`` differs from the manifest's sha256;
- :class:`BundleSpecError`: the features the bundle expects differ from the config's.

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> m = example_manifest(n_features=2)
>>> p = write_bundle(os.path.join(d, "b"), m, b"not really onnx", None)
>>> load_bundle(p, trusted_keys=[], allow_unsigned=True).manifest.n_features
2
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from sensorml.errors import (
    BundleFormatError,
    BundleHashError,
    BundleSignatureError,
    BundleSpecError,
)

__all__ = [
    "FORMAT_VERSION",
    "SCORE_DIRECTION",
    "Manifest",
    "Bundle",
    "load_bundle",
    "write_bundle",
    "write_files",
    "unpack_bundle",
    "spec_differences",
    "keygen",
    "example_manifest",
]

FORMAT_VERSION = 1
SCORE_DIRECTION = "higher_is_anomalous"
MANIFEST, MODEL, SIGNATURE = "manifest.json", "model.onnx", "manifest.sig"
#: size limits when reading a bundle (archive members and directory files alike)
MAX_MODEL_BYTES = 256 << 20
MAX_SMALL_BYTES = 4 << 20
MAX_ARCHIVE_MEMBERS = 64

PathLike = str | os.PathLike

_REQUIRED: dict[str, type | tuple[type, ...]] = {
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
        for key, typ in _REQUIRED.items():
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
        known = set(_REQUIRED) | {"feature_names", "requires"}
        fields = {k: d[k] for k in _REQUIRED}
        fields["version"] = str(d["version"])
        return cls(**fields, feature_names=tuple(names), requires=dict(requires),
                   extra={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in _REQUIRED}
        if self.feature_names:
            d["feature_names"] = list(self.feature_names)
        if self.requires:
            d["requires"] = dict(self.requires)
        return {**self.extra, **d}


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle. ``signed_by`` is the trusted key's fingerprint (or None)."""

    path: Path
    manifest: Manifest
    manifest_bytes: bytes
    model_bytes: bytes
    signed_by: str | None


def keygen(directory: PathLike, name: str = "signing") -> tuple[Path, Path]:
    """:func:`sensorml.bundles.signing.keygen` (kept here for callers of the bundle API)."""
    from sensorml.bundles.signing import keygen as _keygen

    return _keygen(directory, name)


def verify_bytes(data: bytes, sig_file: bytes, trusted_keys, *, where: str) -> str:
    """:func:`sensorml.bundles.signing.verify_bytes`, imported on first use (the ``cryptography``
    package costs a gateway ~9 MB of memory: see :mod:`sensorml.bundles.verifychild`)."""
    from sensorml.bundles.signing import verify_bytes as _verify

    return _verify(data, sig_file, trusted_keys, where=where)


def load_bundle(path: PathLike, *, trusted_keys, allow_unsigned: bool = False,
                expected_spec: Any = None, verify=None) -> Bundle:
    """Read and check a bundle directory or ``.tar.gz``; see the module docstring.

    *trusted_keys*: PEM paths, PEM bytes or base64 raw Ed25519 public keys; any one may
    have signed the bundle (key rotation). *expected_spec*: a ``FeatureSpec`` (or its
    ``to_dict()``) the running config produces. *verify*: the signature check, called as
    ``verify(manifest_bytes, sig_bytes, keys, where=...)`` on the very bytes this function
    goes on to use (default: in this process; the gateway checks in a child process).
    """
    p = Path(path)
    files = read_archive(p) if p.is_file() else _read_dir(p)
    where = lambda name: str(p / name)  # noqa: E731
    for required in (MANIFEST, MODEL):
        if required not in files:
            raise BundleFormatError(f"{where(required)}: missing from bundle")
    mbytes = files[MANIFEST]
    keys = list(trusted_keys or [])
    signed_by = None
    if SIGNATURE in files and (keys or not allow_unsigned):
        signed_by = (verify or verify_bytes)(mbytes, files[SIGNATURE], keys,
                                             where=where(SIGNATURE))
    elif SIGNATURE not in files and not allow_unsigned:
        raise BundleSignatureError(f"{where(SIGNATURE)}: missing (unsigned bundle); sign it with "
                                   "`training sign` or set model.allow_unsigned = true")
    try:
        raw = json.loads(mbytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleFormatError(f"{where(MANIFEST)}: invalid JSON: {e}") from None
    man = Manifest.from_dict(raw, where(MANIFEST))
    digest = hashlib.sha256(files[MODEL]).hexdigest()
    if digest != man.model_sha256:
        raise BundleHashError(f"{where(MODEL)}: sha256 {digest[:16]}… does not match the "
                              f"manifest's {man.model_sha256[:16]}… (corrupted or replaced)")
    if expected_spec is not None:
        diffs = spec_differences(man.feature_spec, man.feature_names, expected_spec)
        if diffs:
            raise BundleSpecError(f"{where(MANIFEST)}: feature spec differs from config: "
                                  + "; ".join(diffs))
    return Bundle(p, man, mbytes, files[MODEL], signed_by)


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


def _read_dir(p: Path) -> dict[str, bytes]:
    if not p.exists():
        raise BundleFormatError(f"{p}: bundle not found (expected a directory or .tar.gz)")
    files = {}
    for name, limit in ((MANIFEST, MAX_SMALL_BYTES), (MODEL, MAX_MODEL_BYTES),
                        (SIGNATURE, MAX_SMALL_BYTES)):
        f = p / name
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise BundleFormatError(f"{f}: not a regular file")
        if st.st_size > limit:
            raise BundleFormatError(f"{f}: {st.st_size} bytes is larger than the {limit} byte limit")
        with open(f, "rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise BundleFormatError(f"{f}: larger than the {limit} byte limit")
        files[name] = data
    return files


def read_archive(p: Path) -> dict[str, bytes]:
    """The bundle's files from a tar archive, read in memory: nothing is extracted.

    Entries may sit at the top or in one folder. Refused: absolute paths, ``..``, links
    and device files, more than MAX_ARCHIVE_MEMBERS entries, files over the size limits.
    """
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(p, "r:*") as tf:
            for i, m in enumerate(tf):
                if i >= MAX_ARCHIVE_MEMBERS:
                    raise BundleFormatError(f"{p}: more than {MAX_ARCHIVE_MEMBERS} archive entries")
                parts = PurePosixPath(m.name).parts
                if m.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise BundleFormatError(f"{p}: archive entry {m.name!r} escapes the bundle directory")
                if m.isdir():
                    continue
                if not m.isfile():
                    raise BundleFormatError(f"{p}: archive entry {m.name!r} is a link or special "
                                            "file; only regular files are allowed")
                base = parts[-1] if parts else ""
                limit = MAX_MODEL_BYTES if base == MODEL else MAX_SMALL_BYTES
                total += m.size
                if m.size > limit or total > MAX_MODEL_BYTES + 2 * MAX_SMALL_BYTES:
                    raise BundleFormatError(f"{p}: archive entry {m.name!r} is {m.size} bytes, over "
                                            f"the {limit} byte limit")
                if base not in (MANIFEST, MODEL, SIGNATURE) or len(parts) > 2:
                    continue
                if base in files:
                    raise BundleFormatError(f"{p}: archive holds {base} twice")
                fobj = tf.extractfile(m)
                data = fobj.read(limit + 1) if fobj else b""
                if len(data) != m.size:
                    raise BundleFormatError(f"{p}: archive entry {m.name!r} is truncated")
                files[base] = data
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BundleFormatError(f"{p}: not a readable bundle archive: {e}") from None
    return files


def write_bundle(path: PathLike, manifest: dict, onnx_bytes: bytes,
                 private_key_path: PathLike | None) -> Path:
    """Write a bundle atomically (temp dir/file, then rename); return its path.

    Sets ``model_sha256`` (and ``format_version``, ``created``, ``score_direction`` when
    absent), checks the manifest, signs the exact manifest bytes when a key is given.
    A path ending in ``.tar.gz``/``.tgz`` writes an archive. An existing bundle
    directory at *path* is replaced.
    """
    p = Path(path)
    m = dict(manifest)
    m["model_sha256"] = hashlib.sha256(onnx_bytes).hexdigest()
    m.setdefault("format_version", FORMAT_VERSION)
    m.setdefault("created", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    m.setdefault("score_direction", SCORE_DIRECTION)
    Manifest.from_dict(m, f"{p}: manifest")
    try:
        mbytes = (json.dumps(m, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
    except ValueError as e:
        raise BundleFormatError(f"{p}: manifest has a non-finite number: {e}") from None
    files = {MANIFEST: mbytes, MODEL: onnx_bytes}
    if private_key_path is not None:
        from sensorml.bundles.signing import sign_bytes

        files[SIGNATURE] = sign_bytes(private_key_path, mbytes)
    return write_files(p, files)


def unpack_bundle(archive: PathLike, dest: PathLike) -> Path:
    """Safely unpack a bundle archive into directory *dest* (only the three bundle files)."""
    return write_files(Path(dest), read_archive(Path(archive)))


def write_files(p: PathLike, files: dict[str, bytes], *, replace: bool = True) -> Path:
    """Write *files* as the directory (or ``.tar.gz``) *p*, atomically: a temp sibling
    renamed into place, contents and folder fsynced. An existing *p* is replaced when
    *replace*, else :class:`FileExistsError` (also when another writer got there first)."""
    p = Path(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not replace and p.exists():
        raise FileExistsError(str(p))
    if p.name.endswith((".tar.gz", ".tgz")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tf.addfile(info, io.BytesIO(data))
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, p)
        else:
            try:
                os.link(tmp, p)  # fails if p appeared meanwhile
            finally:
                os.unlink(tmp)
        _fsync_dir(p.parent)
        return p
    tmp = Path(tempfile.mkdtemp(dir=p.parent, prefix=f".{p.name}.tmp-"))
    old = None
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        if replace and p.exists():
            old = p.parent / f".{p.name}.old-{os.getpid()}"
            os.rename(p, old)
        try:
            os.rename(tmp, p)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError(str(p)) from None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(p.parent)
    return p


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


def example_manifest(n_features: int = 3, **over: Any) -> dict:
    """A minimal valid manifest (without ``model_sha256``) — for docs and tests."""
    names = [f"f{i}" for i in range(n_features)]
    m = {
        "name": "example", "version": "1", "feature_spec": {"names": names},
        "feature_names": names, "input_name": "x", "output_name": "score",
        "thresholds": {"warn": 0.1, "alarm": 0.2, "trip": 0.3},
        "threshold_method": "fixed for the example", "fingerprint": {}, "metrics": {},
        "model_family": "example", "n_features": n_features,
        "training": {"rows": 0, "fitted_at": "1970-01-01T00:00:00Z", "data_sha256": ""},
    }
    m.update(over)
    return m
