"""Ed25519 keys and signatures for model bundles.

Private keys are PKCS#8 PEM files (mode 0600), public keys SubjectPublicKeyInfo PEM
files. A trusted public key may also be written inline in the gateway config as the
base64 of its 32 raw bytes. A key is named by its fingerprint: the first 16 hex digits
of the sha256 of its raw public bytes.

The signature file (``manifest.sig``) is a small JSON document carrying the signature
and the signer's public key, so that a gateway can say *which* untrusted key signed a
bundle. Only the trusted keys decide whether a signature is accepted.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> priv, pub = keygen(d)
>>> sig = sign_bytes(priv, b"manifest")
>>> verify_bytes(b"manifest", sig, [pub]) == fingerprint(load_public_key(pub))
True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sensorml.errors import BundleSignatureError, ConfigError

__all__ = [
    "keygen",
    "load_private_key",
    "load_public_key",
    "public_key_b64",
    "fingerprint",
    "sign_bytes",
    "verify_bytes",
]

PathLike = str | os.PathLike

_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def keygen(directory: PathLike, name: str = "signing") -> tuple[Path, Path]:
    """Create ``<name>.key`` (private, 0600) and ``<name>.pub`` (public) PEM files in *directory*.

    Refuses to overwrite an existing private key.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = d / f"{name}.key", d / f"{name}.pub"
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{priv_path}: private key already exists; refusing to overwrite") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(priv_path, 0o600)
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    pub_path.write_bytes(pub_pem)
    return priv_path, pub_path


def load_private_key(path: PathLike) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from a PEM file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read private key: {e.strerror or e}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}: not a PEM private key without password ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_public_key(spec: PathLike | bytes | Ed25519PublicKey) -> Ed25519PublicKey:
    """A public key from a PEM file path, PEM bytes, or the base64 of the 32 raw bytes."""
    if isinstance(spec, Ed25519PublicKey):
        return spec
    if isinstance(spec, bytes):
        data, where = spec, "public key"
    else:
        text = os.fspath(spec)
        p = Path(text).expanduser()
        if not p.exists() and len(text.strip()) in (43, 44):
            return _from_raw_b64(text, "public key")  # inline: base64 of the 32 raw bytes
        try:
            data, where = p.read_bytes(), str(p)
        except OSError as e:
            raise ConfigError(f"{text}: cannot read public key: {e.strerror or e}") from None
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(stripped)
        except ValueError as e:
            raise ConfigError(f"{where}: not a PEM public key ({e})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{where}: not an Ed25519 public key ({type(key).__name__})")
        return key
    return _from_raw_b64(stripped.decode("ascii", "replace"), where)


def _from_raw_b64(text: str, where: str) -> Ed25519PublicKey:
    text = text.strip()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: neither a PEM file nor base64 of a raw Ed25519 key") from None
    if len(raw) != 32:
        raise ConfigError(f"{where}: raw Ed25519 public key must be 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_b64(key: Ed25519PublicKey) -> str:
    """The base64 of the 32 raw public bytes (the inline config form)."""
    return base64.b64encode(key.public_bytes(*_RAW)).decode("ascii")


def fingerprint(key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw public key."""
    return hashlib.sha256(key.public_bytes(*_RAW)).hexdigest()[:16]


def sign_bytes(private_key_path: PathLike, data: bytes) -> bytes:
    """Sign *data*; returns the signature file content (JSON, ends with a newline)."""
    key = load_private_key(private_key_path)
    pub = key.public_key()
    doc = {
        "alg": "ed25519",
        "key": public_key_b64(pub),
        "key_fingerprint": fingerprint(pub),
        "signature": base64.b64encode(key.sign(data)).decode("ascii"),
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def verify_bytes(data: bytes, sig_file: bytes, trusted_keys: Iterable, *, where: str = "manifest.sig") -> str:
    """Check *sig_file* over *data* with any of *trusted_keys*; return the signer's fingerprint.

    Raises :class:`BundleSignatureError` naming *where* when the signature file is
    malformed, does not match *data*, or was made by a key that is not trusted.
    """
    keys = [load_public_key(k) for k in trusted_keys]
    try:
        doc = json.loads(sig_file)
        sig = base64.b64decode(doc["signature"], validate=True)
        signer_b64 = doc.get("key")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BundleSignatureError(f"{where}: not a sensorml signature file (expected JSON with "
                                   "'signature')") from None
    for k in keys:
        try:
            k.verify(sig, data)
            return fingerprint(k)
        except InvalidSignature:
            continue
    trusted = ", ".join(fingerprint(k) for k in keys) or "none"
    signer = None
    if isinstance(signer_b64, str):
        try:
            signer = _from_raw_b64(signer_b64, where)
        except ConfigError:
            signer = None
    if signer is not None and fingerprint(signer) not in {fingerprint(k) for k in keys}:
        try:
            signer.verify(sig, data)
            state = "valid signature"
        except InvalidSignature:
            state = "and the signature does not match the manifest either"
        raise BundleSignatureError(f"{where}: signed by untrusted key {fingerprint(signer)} "
                                   f"({state}); trusted keys: {trusted}")
    raise BundleSignatureError(f"{where}: signature does not match manifest.json (modified after "
                               f"signing?); trusted keys: {trusted}")
