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

The manifest's fields are checked by :class:`~sensorml.bundles.manifest.Manifest`; the
files are read and written by :mod:`sensorml.bundles.files`.

>>> import tempfile, os
>>> names = ["rms_ax", "kurtosis_ax"]
>>> m = {"name": "pump", "version": "1", "feature_spec": {"names": names},
...      "feature_names": names, "input_name": "x", "output_name": "score",
...      "thresholds": {"warn": 1.0, "alarm": 2.0, "trip": 3.0}, "threshold_method": "fixed",
...      "fingerprint": {}, "metrics": {}, "model_family": "example", "n_features": 2,
...      "training": {"rows": 0}}
>>> p = write_bundle(os.path.join(tempfile.mkdtemp(), "b"), m, b"not really onnx", None)
>>> load_bundle(p, trusted_keys=[], allow_unsigned=True).manifest.feature_names
('rms_ax', 'kurtosis_ax')
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sensorml.bundles.files import (
    MANIFEST,
    MODEL,
    SIGNATURE,
    PathLike,
    read_archive,
    read_dir,
    unpack_bundle,
    write_files,
)
from sensorml.bundles.manifest import FORMAT_VERSION, SCORE_DIRECTION, Manifest, spec_differences
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
]


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
    files = read_archive(p) if p.is_file() else read_dir(p)
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
