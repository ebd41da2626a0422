"""The gateway-side bundle store: staged versions, the live one, the last good one.

Layout under ``<state_dir>/bundles/``::

    <name>/<version>/{manifest.json,model.onnx,manifest.sig}   staged, verified, read-only
    current   -> <name>/<version>      what the gateway runs (``model.bundle`` points here)
    last_good -> <name>/<version>      what it ran before the last promotion
    candidate -> <name>/<version>      a new version in shadow, if any
    deploy.json                         state: rollbacks, refused versions, desired files seen

Links are swapped atomically (a new link, then ``rename``), and every change of state
holds an ``flock`` on ``.lock``, so the sync job, the gateway and ``sensorml rollback``
can act at the same time. Nothing is written outside this folder: a download is checked
(hash, signature, feature spec, compatibility) in a temporary folder inside it, which is
removed when a check fails.

>>> import tempfile
>>> s = BundleStore(tempfile.mkdtemp())
>>> s.state()["live"] is None
True
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sensorml import __version__
from sensorml.bundles.bundle import load_bundle
from sensorml.bundles.desired import version_key
from sensorml.bundles.files import MANIFEST, MODEL, SIGNATURE
from sensorml.bundles.manifest import FORMAT_VERSION
from sensorml.errors import BundleError, BundleFormatError, SensormlError

__all__ = ["BundleStore", "DeployError", "IncompatibleBundle", "Staged", "check_compatible",
           "deployment_state", "release_key"]

CURRENT, LAST_GOOD, CANDIDATE = "current", "last_good", "candidate"
STATE = "deploy.json"


class DeployError(SensormlError):
    """A deployment step was refused (downgrade, unknown version, nothing to roll back to)."""


class IncompatibleBundle(BundleError):
    """This gateway cannot run the bundle; the message says what it would need."""


_N = r"(?:[-_.]?(\d+))?"
_RELEASE = re.compile(rf"v?(\d+(?:\.\d+)*)(?:[-_.]?(alpha|beta|preview|pre|rc|a|b|c){_N})?(?:[-_.]?(post){_N})?"
                      rf"(?:[-_.]?(dev){_N})?(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?", re.IGNORECASE)
_PHASE = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "rc": 2, "c": 2, "pre": 2, "preview": 2}


def release_key(v: object, key: str) -> tuple:
    """Sort key of a PEP 440 version (release, a/b/rc, post, dev; a local ``+label`` is
    ignored); a BundleFormatError naming ``key`` if ``v`` is not one.

    >>> sorted(["0.1.0", "0.1.0rc1", "0.1.0a1", "0.1.0.dev2", "0.1.0.post1", "0.1a1.dev1"],
    ...        key=lambda v: release_key(v, "v"))
    ['0.1.0.dev2', '0.1a1.dev1', '0.1.0a1', '0.1.0rc1', '0.1.0', '0.1.0.post1']
    >>> release_key("latest", "requires.sensorml")
    Traceback (most recent call last):
    ...
    sensorml.errors.BundleFormatError: requires.sensorml: 'latest' is not a version (like 0.2, 0.2.1 or 0.3.0rc1)
    """
    m = _RELEASE.fullmatch(v.strip()) if isinstance(v, str) else None
    if m is None:
        raise BundleFormatError(f"{key}: {v!r} is not a version (like 0.2, 0.2.1 or 0.3.0rc1)")
    rel, phase, pre, post, post_n, dev, dev_n = m.groups()
    nums = [int(p) for p in rel.split(".")]
    while len(nums) > 1 and nums[-1] == 0:  # 0.1 == 0.1.0
        nums.pop()
    if phase is not None:
        stage = (0, _PHASE[phase.lower()], int(pre or 0))
    elif dev is not None and post is None:
        stage = (-1, 0, 0)  # 0.1.dev1 comes before 0.1a1
    else:
        stage = (1, 0, 0)
    return (tuple(nums), stage, -1 if post is None else int(post_n or 0),
            math.inf if dev is None else int(dev_n or 0))


def check_compatible(raw: dict, where: str) -> None:
    """Refuse a manifest this gateway cannot run, naming the version it would need.

    >>> check_compatible({"format_version": 1, "feature_spec": {"feature_code_version": "9"}}, "m")
    Traceback (most recent call last):
    ...
    sensorml.bundles.staging.IncompatibleBundle: m: needs feature code version 9; this gateway computes 1 (upgrade sensorml on the gateway, or publish the model for feature version 1)
    """
    from sensorml.edge.features import FEATURE_CODE_VERSION

    req = raw.get("requires") if isinstance(raw.get("requires"), dict) else {}
    need = req.get("sensorml")
    fmt = raw.get("format_version")
    if isinstance(fmt, int) and fmt > FORMAT_VERSION:
        hint = f"sensorml >= {need}" if need else f"a sensorml that reads bundle format {fmt}"
        raise IncompatibleBundle(f"{where}: bundle format {fmt} needs {hint}; this gateway runs "
                                 f"sensorml {__version__} (reads format {FORMAT_VERSION})")
    if need is not None and release_key(need, f"{where}: requires.sensorml") > \
            release_key(__version__, "sensorml.__version__"):
        raise IncompatibleBundle(f"{where}: needs sensorml >= {need}; this gateway runs {__version__}")
    spec = raw.get("feature_spec") if isinstance(raw.get("feature_spec"), dict) else {}
    fcv = str(req.get("feature_code_version", spec.get("feature_code_version", FEATURE_CODE_VERSION)))
    if fcv != FEATURE_CODE_VERSION:
        raise IncompatibleBundle(
            f"{where}: needs feature code version {fcv}; this gateway computes "
            f"{FEATURE_CODE_VERSION} (upgrade sensorml on the gateway, or publish the model for "
            f"feature version {FEATURE_CODE_VERSION})")


@dataclass(frozen=True)
class Staged:
    name: str
    version: str
    path: Path
    new: bool  # False: this exact bundle was staged already


class BundleStore:
    """Staged bundles and the ``current``/``last_good``/``candidate`` links of one gateway."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read_state(self) -> dict:
        try:
            return json.loads((self.root / STATE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _write_state(self, st: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".state-")
        with os.fdopen(fd, "w") as f:
            json.dump(st, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / STATE)

    def _link(self, name: str, target: tuple[str, str] | None) -> None:
        link = self.root / name
        if target is None:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            return
        tmp = self.root / f".{name}.tmp-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(f"{target[0]}/{target[1]}", tmp)
        os.replace(tmp, link)  # atomic: readers see the old or the new link, never none
        _fsync_dir(self.root)

    def link(self, name: str) -> tuple[str, str] | None:
        """``(model name, version)`` a link points at, or None."""
        try:
            t = os.readlink(self.root / name)
        except (FileNotFoundError, OSError):
            return None
        parts = Path(t).parts
        return (parts[-2], parts[-1]) if len(parts) >= 2 else None

    def path(self, name: str, version: str) -> Path:
        return self.root / name / version

    def versions(self, name: str) -> list[str]:
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted((p.name for p in d.iterdir() if (p / MANIFEST).exists()), key=version_key)

    # -------------------------------------------------------------- staging
    def stage(self, files: dict[str, bytes], *, trusted_keys, expected_spec=None,
              allow_unsigned: bool = False, where: str = "download") -> Staged:
        """Check a downloaded bundle and move it to ``<name>/<version>/``.

        Compatibility is checked first (so an old gateway says what it would need),
        then :func:`~sensorml.bundles.bundle.load_bundle` checks signature, hash and feature spec
        on a temporary copy inside the store. Any failure removes that copy and raises.
        """
        if MANIFEST not in files or MODEL not in files:
            raise BundleFormatError(f"{where}: manifest.json or model.onnx missing")
        try:
            raw = json.loads(files[MANIFEST])
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleFormatError(f"{where}/manifest.json: invalid JSON: {e}") from None
        if not isinstance(raw, dict):
            raise BundleFormatError(f"{where}/manifest.json: expected a JSON object")
        check_compatible(raw, f"{where}/manifest.json")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".incoming-"))
        try:
            for fname in (MANIFEST, MODEL, SIGNATURE):
                if fname in files:
                    with open(tmp / fname, "wb") as fh:
                        fh.write(files[fname])
                        fh.flush()
                        os.fsync(fh.fileno())
            try:
                b = load_bundle(tmp, trusted_keys=list(trusted_keys),
                                allow_unsigned=allow_unsigned, expected_spec=expected_spec)
            except BundleError as e:  # name the download, not the temporary folder
                raise type(e)(str(e).replace(str(tmp), where)) from None
            name, version = b.manifest.name, b.manifest.version
            for part in (name, version):
                if not part or "/" in part or part.startswith("."):
                    raise BundleFormatError(f"{where}/manifest.json: unusable name/version {part!r}")
            with self.locked():
                dest = self.path(name, version)
                if (dest / MANIFEST).exists():
                    if (dest / MANIFEST).read_bytes() == files[MANIFEST]:
                        return Staged(name, version, dest, False)
                    raise DeployError(f"{where}: {name} {version} is staged already with a "
                                      "different manifest; publish a new version instead")
                dest.parent.mkdir(parents=True, exist_ok=True)
                for f in tmp.iterdir():
                    f.chmod(0o444)
                os.rename(tmp, dest)
                _fsync_dir(dest.parent)
                return Staged(name, version, dest, True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # --------------------------------------------------------------- state
    def state(self) -> dict:
        """Links and recorded history, for ``/status``, the heartbeat and the CLI."""
        st = self._read_state()
        fmt = lambda t: None if t is None else {"name": t[0], "version": t[1]}  # noqa: E731
        return {"live": fmt(self.link(CURRENT)), "last_good": fmt(self.link(LAST_GOOD)),
                "candidate": fmt(self.link(CANDIDATE)),
                "last_rollback": st.get("last_rollback"), "last_promotion": st.get("last_promotion"),
                "refused": st.get("refused", {}), "desired_seen": st.get("desired_seen", {}),
                "last_redeploy": st.get("last_redeploy")}

    def note(self, key: str, value: Any) -> None:
        """Record one value in ``deploy.json`` (under the lock)."""
        with self.locked():
            st = self._read_state()
            st[key] = value
            self._write_state(st)

    def desired_seen(self, where: str) -> float | None:
        return self._read_state().get("desired_seen", {}).get(where)

    def accept_desired(self, where: str, issued_at: float) -> None:
        """Remember the newest accepted desired file (refuses replays of older ones)."""
        with self.locked():
            st = self._read_state()
            seen = st.setdefault("desired_seen", {})
            seen[where] = max(issued_at, seen.get(where, 0.0))
            self._write_state(st)

    def refused(self, name: str, version: str) -> dict | None:
        """Why *version* was rolled back or refused before (None: never)."""
        return self._read_state().get("refused", {}).get(f"{name}/{version}")

    # ---------------------------------------------------------- transitions
    def check_not_downgrade(self, name: str, version: str, allow_downgrade: bool) -> None:
        live = self.link(CURRENT)
        if (live and live[0] == name and not allow_downgrade
                and version_key(version) < version_key(live[1])):
            raise DeployError(f"{name} {version} is older than the live {live[1]}: refusing a "
                              "downgrade (the desired file must say allow_downgrade = true)")

    def set_candidate(self, name: str, version: str, *, issued_at: float | None = None) -> None:
        """Put a staged version in shadow (the gateway's reload loop picks it up).
        *issued_at*: of the desired file that asked for it (a rollback holds until a
        newer desired file names the version again)."""
        if not (self.path(name, version) / MANIFEST).exists():
            raise DeployError(f"{name} {version} is not staged in {self.root}")
        with self.locked():
            st = self._read_state()
            st["candidate_desired"] = {"name": name, "version": version, "issued_at": issued_at}
            self._write_state(st)
            self._link(CANDIDATE, (name, version))

    def clear_candidate(self) -> None:
        """Withdraw a candidate (the desired version went back to the live one)."""
        with self.locked():
            self._link(CANDIDATE, None)

    def activate(self, name: str, version: str, *, by: str) -> None:
        """Make *version* live now (first install, or a shadow run passed): ``current`` →
        it, ``last_good`` → the previous live one, candidate cleared if it was this one."""
        if not (self.path(name, version) / MANIFEST).exists():
            raise DeployError(f"{name} {version} is not staged in {self.root}")
        with self.locked():
            prev = self.link(CURRENT)
            if prev is not None and prev != (name, version):
                self._link(LAST_GOOD, prev)
            self._link(CURRENT, (name, version))
            if self.link(CANDIDATE) == (name, version):
                self._link(CANDIDATE, None)
            st = self._read_state()
            st["last_promotion"] = {"name": name, "version": version, "by": by,
                                    "previous": prev[1] if prev else None, "t": time.time()}
            self._write_state(st)

    def reject(self, name: str, version: str, reason: str, *, by: str) -> None:
        """A candidate failed (shadow, load): clear it and remember why (not retried
        until a newer desired file names it again)."""
        with self.locked():
            if self.link(CANDIDATE) == (name, version):
                self._link(CANDIDATE, None)
            st = self._read_state()
            rec = {"name": name, "version": version, "reason": reason, "by": by, "t": time.time(),
                   "kind": "candidate"}
            cd = st.get("candidate_desired") or {}
            if (cd.get("name"), cd.get("version")) == (name, version):
                rec["desired_issued_at"] = cd.get("issued_at")
            st["last_rollback"] = rec
            st.setdefault("refused", {})[f"{name}/{version}"] = rec
            self._write_state(st)

    def forget_refusal(self, name: str, version: str) -> None:
        with self.locked():
            st = self._read_state()
            if st.get("refused", {}).pop(f"{name}/{version}", None) is not None:
                self._write_state(st)

    def rollback(self, to: str | None = None, *, reason: str = "manual", by: str = "operator") -> tuple[str, str]:
        """Make ``last_good`` (or the staged version *to*) live again; clears a candidate.
        Returns ``(name, version)`` now live."""
        with self.locked():
            live = self.link(CURRENT)
            if to is None:
                target = self.link(LAST_GOOD)
                if target is None:
                    raise DeployError(f"{self.root}: no last_good bundle to roll back to "
                                      "(give --to VERSION)")
            else:
                name = live[0] if live else None
                if name is None:
                    names = [p.name for p in self.root.iterdir() if p.is_dir()
                             and not p.name.startswith(".") and (p / to / MANIFEST).exists()]
                    name = names[0] if len(names) == 1 else None
                if name is None or not (self.path(name, to) / MANIFEST).exists():
                    staged = ", ".join(self.versions(live[0])) if live else "none"
                    raise DeployError(f"{self.root}: version {to!r} is not staged "
                                      f"(staged: {staged or 'none'})")
                target = (name, to)
            if live == target:
                raise DeployError(f"{target[0]} {target[1]} is live already")
            self._link(CURRENT, target)
            if live is not None:
                self._link(LAST_GOOD, live)
            cand = self.link(CANDIDATE)
            self._link(CANDIDATE, None)
            st = self._read_state()
            rec = {"name": target[0], "version": target[1], "from": live[1] if live else None,
                   "reason": reason, "by": by, "t": time.time(), "kind": "live"}
            st["last_rollback"] = rec
            if live is not None:
                st.setdefault("refused", {})[f"{live[0]}/{live[1]}"] = rec
            if cand is not None:
                st.setdefault("refused", {})[f"{cand[0]}/{cand[1]}"] = rec
            self._write_state(st)
            return target


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def deployment_state(state_dir: str | os.PathLike) -> dict:
    """The deployment part of the heartbeat (``status/<device>.json``): version live,
    shadow candidate, last good, last promotion, last rollback and why.

    Reads files only (no running gateway needed); the sync job calls it.
    """
    st = BundleStore(Path(state_dir) / "bundles").state()
    return {k: st[k] for k in ("live", "candidate", "last_good", "last_promotion",
                               "last_rollback", "last_redeploy")}
