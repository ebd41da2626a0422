"""Signature checks in a short-lived child process.

The gateway checks a bundle's Ed25519 signature when it loads it, and only then. Doing
that in the gateway's own process would keep the ``cryptography`` package mapped for
the process's whole life (~9 MB of a gateway's ~80 MB budget on a Raspberry-Pi-class
box). So the gateway reads the bundle once, hands the exact manifest and signature bytes
it is about to use to ``python -m sensorml.bundles.verifychild`` on stdin, and acts on its
answer; the bytes it then runs are the bytes that were checked (no re-read, no race).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

from sensorml.errors import BundleSignatureError, ConfigError


def verify_in_child(data: bytes, sig_file: bytes, trusted_keys, *, where: str,
                    timeout: float = 60.0) -> str:
    """Like :func:`sensorml.bundles.signing.verify_bytes`, in a child process: the signer's
    fingerprint, or the same one-line errors."""
    keys = []
    for k in trusted_keys:
        if isinstance(k, bytes | bytearray):
            keys.append({"pem": base64.b64encode(bytes(k)).decode()})
        else:
            keys.append({"key": str(k)})
    req = json.dumps({"data": base64.b64encode(data).decode(),
                      "sig": base64.b64encode(sig_file).decode(), "keys": keys, "where": where})
    try:
        r = subprocess.run([sys.executable, "-m", "sensorml.bundles.verifychild"], input=req,
                           capture_output=True, text=True, timeout=timeout)
        out = json.loads(r.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        raise BundleSignatureError(f"{where}: the signature check could not run ({e})") from None
    if out.get("ok"):
        return out["signer"]
    cls = ConfigError if out.get("kind") == "config" else BundleSignatureError
    raise cls(out.get("error") or f"{where}: signature check failed")


def main() -> int:
    from sensorml.bundles.signing import verify_bytes

    req = json.loads(sys.stdin.read())
    keys = [base64.b64decode(k["pem"]) if "pem" in k else k["key"] for k in req["keys"]]
    try:
        signer = verify_bytes(base64.b64decode(req["data"]), base64.b64decode(req["sig"]), keys,
                              where=req["where"])
        out = {"ok": True, "signer": signer}
    except BundleSignatureError as e:
        out = {"ok": False, "kind": "signature", "error": str(e)}
    except ConfigError as e:
        out = {"ok": False, "kind": "config", "error": str(e)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
