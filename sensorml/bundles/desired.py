"""Desired-state files: which model version a device should run, signed like bundles.

The cloud store holds ``desired/<device-or-fleet>.json`` with a detached signature
``desired/<name>.json.sig`` (the same Ed25519 keys and signature format as bundles, see
:mod:`sensorml.bundles.signing`). A document::

    {"schema": 1, "scope": "fleet", "target": "pumps",      # must match the file name
     "model": "pump", "version": "3",                         # the fleet default
     "devices": {"pump-07": "2"},                             # per-device override
     "canary": {"share": 0.1, "version": "4"},                # 10 % of devices get 4 first
     "allow_downgrade": false,
     "issued_at": "2026-11-26T16:00:00Z", "not_before": "2026-11-26T16:00:00Z"}

``target`` and the keys of ``devices`` follow the device-id rule (:mod:`sensorml.ids`).
A device file (``scope = "device"``, ``target`` = the device id) overrides the fleet file
as a whole. Within a fleet file: the device's entry in ``devices`` wins, then the canary
(chosen by a hash of the device id, so the same devices are canaries on every run and a
larger share keeps the earlier ones), then ``version``.

``issued_at`` orders documents: a gateway remembers the newest it accepted per file and
refuses an older one (a replayed file), and :mod:`sensorml.bundles.staging` refuses a lower
version than the live one unless ``allow_downgrade`` is true.

>>> doc = {"schema": 1, "scope": "fleet", "target": "pumps", "model": "pump",
...        "version": "3", "canary": {"share": 0.5, "version": "4"},
...        "issued_at": "2026-11-26T16:00:00Z"}
>>> d = DesiredState.from_dict(doc, "desired/pumps.json")
>>> sorted({resolve("pumps", d, f"pump-{i}").version for i in range(20)})
['3', '4']
>>> resolve("pumps", d, "pump-1").reason
'fleet pumps canary 50% (bucket 0.13)'
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sensorml.errors import SensormlError
from sensorml.ids import check_device_id

__all__ = ["DesiredError", "DesiredState", "MAX_DESIRED_BYTES", "Target", "resolve",
           "canary_bucket", "parse_time", "make_desired", "verify_desired", "version_key"]

SCHEMA = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: the most a desired-state file (or its signature) may weigh: checked before it is read
MAX_DESIRED_BYTES = 64 << 10


class DesiredError(SensormlError):
    """A desired-state file is malformed, wrongly signed, replayed or not for us."""


def parse_time(text: Any, where: str) -> float:
    """``2026-11-26T16:00:00Z`` (or with an offset) → POSIX seconds."""
    if not isinstance(text, str):
        raise DesiredError(f"{where}: expected an ISO 8601 time like 2026-11-26T16:00:00Z, got {text!r}")
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DesiredError(f"{where}: {text!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise DesiredError(f"{where}: {text!r} has no time zone (add Z for UTC)")
    return t.timestamp()


def version_key(v: str) -> tuple:
    """Order versions naturally: ``'10' > '9'``, ``'1.10' > '1.9'``, ``'2b' > '2a'``.

    >>> sorted(["10", "9", "1.10", "1.9"], key=version_key)
    ['1.9', '1.10', '9', '10']
    """
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in re.split(r"[.\-_+]|(?<=\d)(?=\D)|(?<=\D)(?=\d)", str(v)) if p)


def _check_name(v: Any, where: str) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not _NAME.fullmatch(v):
        raise DesiredError(f"{where}: {v!r} is not a valid name/version (letters, digits, . _ -)")
    return v


@dataclass(frozen=True)
class DesiredState:
    """One checked desired-state document."""

    scope: str  # "fleet" or "device"
    target: str
    model: str
    version: str
    issued_at: float
    not_before: float = 0.0
    allow_downgrade: bool = False
    canary_share: float = 0.0
    canary_version: str | None = None
    devices: dict = field(default_factory=dict)
    where: str = ""

    @classmethod
    def from_dict(cls, d: Any, where: str) -> DesiredState:
        if not isinstance(d, dict):
            raise DesiredError(f"{where}: expected a JSON object")
        if d.get("schema", SCHEMA) != SCHEMA:
            raise DesiredError(f"{where}: schema {d.get('schema')!r} is not supported (this "
                               f"gateway reads {SCHEMA}); upgrade sensorml")
        for k in ("scope", "target", "model", "version", "issued_at"):
            if k not in d:
                raise DesiredError(f"{where}: missing field '{k}'")
        if d["scope"] not in ("fleet", "device"):
            raise DesiredError(f"{where}: scope must be 'fleet' or 'device', got {d['scope']!r}")
        canary = d.get("canary") or {}
        if not isinstance(canary, dict):
            raise DesiredError(f"{where}: canary must be an object with share and version")
        share = canary.get("share", 0.0)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise DesiredError(f"{where}: canary.share must be a number in 0..1, got {share!r}")
        cver = canary.get("version")
        if share and cver is None:
            raise DesiredError(f"{where}: canary.share is given without canary.version")
        devices = d.get("devices") or {}
        if not isinstance(devices, dict):
            raise DesiredError(f"{where}: devices must be an object {{device: version}}")
        allow = d.get("allow_downgrade", False)
        if not isinstance(allow, bool):
            raise DesiredError(f"{where}: allow_downgrade must be true or false, got {allow!r}")
        what = "device id" if d["scope"] == "device" else "fleet name"
        return cls(
            scope=d["scope"], target=check_device_id(d["target"], f"{where}: target",
                                                     DesiredError, what),
            model=_check_name(d["model"], f"{where}: model"),
            version=_check_name(d["version"], f"{where}: version"),
            issued_at=parse_time(d["issued_at"], f"{where}: issued_at"),
            not_before=parse_time(d["not_before"], f"{where}: not_before")
            if d.get("not_before") else 0.0,
            allow_downgrade=allow, canary_share=float(share),
            canary_version=_check_name(cver, f"{where}: canary.version") if cver is not None else None,
            devices={check_device_id(k, f"{where}: devices", DesiredError):
                     _check_name(v, f"{where}: devices.{k}") for k, v in devices.items()},
            where=where,
        )


@dataclass(frozen=True)
class Target:
    """What this device should run, and why (for logs and the heartbeat)."""

    model: str
    version: str
    allow_downgrade: bool
    issued_at: float
    not_before: float
    source: str  # the desired file that decided
    reason: str


def canary_bucket(device_id: str, fleet: str, version: str) -> float:
    """A stable number in [0, 1) per device and canary version: the device is a canary
    when it is below the share.

    >>> canary_bucket("pump-1", "pumps", "4") == canary_bucket("pump-1", "pumps", "4")
    True
    """
    h = hashlib.sha256(f"{fleet}\0{version}\0{device_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def resolve(fleet: str | None, fleet_doc: DesiredState | None, device_id: str,
            device_doc: DesiredState | None = None) -> Target | None:
    """The version *device_id* should run: device file, else the fleet file's device
    entry, canary, then default. ``None`` when neither file exists."""
    if device_doc is not None:
        d = device_doc
        return Target(d.model, d.version, d.allow_downgrade, d.issued_at, d.not_before,
                      d.where, f"device file {device_id}")
    if fleet_doc is None:
        return None
    d = fleet_doc
    if device_id in d.devices:
        version, why = d.devices[device_id], f"fleet {d.target} override for {device_id}"
    elif d.canary_share > 0 and d.canary_version is not None:
        b = canary_bucket(device_id, d.target, d.canary_version)
        if b < d.canary_share:
            version, why = d.canary_version, f"fleet {d.target} canary {d.canary_share:.0%} (bucket {b:.2f})"
        else:
            version, why = d.version, f"fleet {d.target} default"
    else:
        version, why = d.version, f"fleet {d.target} default"
    return Target(d.model, version, d.allow_downgrade, d.issued_at, d.not_before, d.where, why)


def verify_desired(data: bytes, sig: bytes | None, trusted_keys, *, where: str,
                   expect_scope: str, expect_target: str,
                   allow_unsigned: bool = False) -> DesiredState:
    """Check the signature over the exact bytes, parse, and check the file is meant for
    this place (a signed file for another device copied here is refused)."""
    if sig is None:
        if not allow_unsigned:
            raise DesiredError(f"{where}.sig: missing; desired-state files must be signed "
                               "(`sensorml desired` / training publish sign them)")
    else:
        try:
            from sensorml.bundles.signing import verify_bytes

            verify_bytes(data, sig, trusted_keys, where=f"{where}.sig")
        except SensormlError as e:
            raise DesiredError(str(e)) from None
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DesiredError(f"{where}: invalid JSON: {e}") from None
    d = DesiredState.from_dict(raw, where)
    if (d.scope, d.target) != (expect_scope, expect_target):
        raise DesiredError(f"{where}: signed for {d.scope} {d.target!r}, not {expect_scope} "
                           f"{expect_target!r} (copied from another file?)")
    return d


def make_desired(scope: str, target: str, model: str, version: str, *,
                 issued_at: float | None = None, key: str | Path | None = None,
                 **extra: Any) -> tuple[bytes, bytes | None]:
    """Build (and sign with *key*) a desired-state document: ``(json_bytes, sig_bytes)``.

    *extra*: ``canary={"share": .., "version": ..}``, ``devices={..}``,
    ``allow_downgrade=True``, ``not_before=<POSIX seconds>``.
    """
    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    t = datetime.now(UTC).timestamp() if issued_at is None else issued_at
    doc: dict[str, Any] = {"schema": SCHEMA, "scope": scope, "target": target, "model": model,
                           "version": str(version), "issued_at": iso(t)}
    if "not_before" in extra:
        extra["not_before"] = iso(float(extra["not_before"]))
    doc.update(extra)
    DesiredState.from_dict(doc, f"desired/{target}.json")
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    from sensorml.bundles.signing import sign_bytes

    return data, (sign_bytes(key, data) if key is not None else None)
