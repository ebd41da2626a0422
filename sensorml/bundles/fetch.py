"""The download side of the sync job: desired state → bundle → verified, staged, in shadow.

One run of :func:`redeploy`:

1. fetch ``desired/<device_id>.json`` and ``desired/<fleet>.json`` (each with its
   ``.sig``) from the store; check signatures with the gateway's ``model.trusted_keys``,
   that each file names this device/fleet, and that it is not older than one accepted
   before (a replayed file is refused);
2. resolve the version this device should run (device file, fleet override, canary,
   fleet default) and wait for ``not_before``;
3. refuse a downgrade unless the desired file says ``allow_downgrade`` (and
   ``deploy.allow_downgrade`` is not false), and skip a version rolled back before
   unless a newer desired file names it again;
4. fetch ``models/<name>/<version>/{manifest.json,model.onnx,manifest.sig}`` (each size
   checked against its limit before it is read: desired files 64 KiB, the model 256 MiB,
   the others 4 MiB; a larger object or a link in a file store is refused), check
   compatibility, signature, hash and feature spec, stage it in
   ``<state_dir>/bundles/<name>/<version>`` (:class:`sensorml.bundles.staging.BundleStore`);
5. make it the shadow ``candidate`` (or, when nothing is live yet, ``current``) and
   tell the running gateway (``POST /reload``; its reload loop also polls the links).

The gateway must run what the store says is current: ``model.bundle`` is
``<state_dir>/bundles/current``. Run it alone with
``sensorml redeploy --config gateway.toml``; the sync job runs it each period.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sensorml.bundles.desired import (
    MAX_DESIRED_BYTES,
    DesiredError,
    DesiredState,
    resolve,
    verify_desired,
)
from sensorml.bundles.files import MANIFEST, MAX_MODEL_BYTES, MAX_SMALL_BYTES, MODEL, SIGNATURE
from sensorml.bundles.staging import CANDIDATE, CURRENT, BundleStore, DeployError, deployment_state
from sensorml.errors import BundleError, ConfigError, SensormlError, StoreError

log = logging.getLogger("sensorml.bundles.fetch")

__all__ = ["RedeployResult", "redeploy", "open_store", "check_layout", "notify_gateway"]


@dataclass(frozen=True)
class RedeployResult:
    """What one run did: ``action`` is one of none, up-to-date, pending, in-shadow,
    skipped, shadow, installed, refused (a check failed), offline (the store failed)."""

    action: str
    message: str
    model: str | None = None
    version: str | None = None
    source: str | None = None
    t: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def open_store(url: str, cfg=None):
    """The cloud store at *url* (``file://`` or ``s3://``, see :mod:`sensorml.sync.stores`), with
    the endpoint, region and credentials of *cfg*'s ``[sync]`` table when it has them."""
    from sensorml.sync.stores import open_store as _open

    sync = getattr(cfg, "sync", None)
    kw = {k: getattr(sync, k) for k in ("endpoint", "region", "credentials")
          if getattr(sync, k, None)}
    return _open(url, **kw)


def _get(store, key: str, max_bytes: int) -> bytes | None:
    """The object at *key* (at most *max_bytes*, checked before it is read), or None when
    it does not exist. An object the store refuses to read (too large, a link) is a
    refusal of this deployment, not an outage; other store errors raise."""
    from sensorml.sync.stores import NotFound, ObjectRefused

    try:
        return store.get(key, max_bytes=max_bytes)
    except NotFound:
        return None
    except ObjectRefused as e:
        raise DeployError(str(e)) from None


def check_layout(cfg) -> BundleStore:
    """The gateway's bundle store; its ``model.bundle`` must be the store's ``current``."""
    bs = BundleStore(cfg.state_dir / "bundles")
    want = bs.root / CURRENT
    got = cfg.model.bundle
    if got is None or os.path.normpath(got) != os.path.normpath(want):
        raise ConfigError(f"model.bundle: must be {want} (the bundle store's live link) for "
                          f"redeployment, got {got}")
    return bs


def _desired(store, bs: BundleStore, cfg, scope: str, name: str) -> DesiredState | None:
    key = f"desired/{name}.json"
    data = _get(store, key, MAX_DESIRED_BYTES)
    if data is None:
        return None
    d = verify_desired(data, _get(store, key + ".sig", MAX_DESIRED_BYTES),
                       list(cfg.model.trusted_keys), where=key,
                       expect_scope=scope, expect_target=name,
                       allow_unsigned=cfg.model.allow_unsigned)
    seen = bs.desired_seen(key)
    if seen is not None and d.issued_at < seen:
        raise DesiredError(f"{key}: issued_at {_iso(d.issued_at)} is older than the last accepted "
                           f"{_iso(seen)}: a replayed desired file, refused")
    return d


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def redeploy(cfg, store=None, *, now: float | None = None, notify: bool = True) -> RedeployResult:
    """One download/redeploy run for the gateway of *cfg*; see the module docstring.

    Refusals (bad signature, replay, downgrade, tampered bundle, incompatible) are
    returned as ``action="refused"`` with the reason, recorded in ``deploy.json`` for the
    heartbeat, and change nothing outside the bundle store.
    """
    bs = check_layout(cfg)
    now = time.time() if now is None else now
    try:
        store = open_store(cfg.sync.store, cfg) if store is None else store
        res = _run(cfg, store, bs, now)
    except StoreError as e:  # unreachable, denied: try again next period
        res = RedeployResult("offline", str(e))
    except (DesiredError, DeployError, BundleError, SensormlError) as e:
        res = RedeployResult("refused", str(e))
    res = RedeployResult(**{**res.to_dict(), "t": now})
    bs.note("last_redeploy", res.to_dict())
    (log.warning if res.action == "refused" else log.info)("redeploy: %s: %s", res.action, res.message)
    if notify and res.action in ("shadow", "installed"):
        notify_gateway(cfg.state_dir)
    return res


def _run(cfg, store, bs: BundleStore, now: float) -> RedeployResult:
    dev = _desired(store, bs, cfg, "device", cfg.device_id)
    fleet = _desired(store, bs, cfg, "fleet", cfg.deploy.fleet)
    target = resolve(cfg.deploy.fleet, fleet, cfg.device_id, dev)
    if target is None:
        return RedeployResult("none", f"no desired/{cfg.device_id}.json or "
                                      f"desired/{cfg.deploy.fleet}.json in the store")
    m, v = target.model, target.version
    info = dict(model=m, version=v, source=target.source)

    def accept() -> None:
        for d in (dev, fleet):
            if d is not None:
                bs.accept_desired(d.where, d.issued_at)

    try:
        return _apply(cfg, store, bs, now, target, accept)
    except StoreError as e:
        return RedeployResult("offline", str(e), **info)
    except (DeployError, BundleError, SensormlError) as e:
        return RedeployResult("refused", str(e), **info)


def _apply(cfg, store, bs: BundleStore, now: float, target, accept) -> RedeployResult:
    m, v = target.model, target.version
    info = dict(model=m, version=v, source=target.source)
    if now < target.not_before:
        return RedeployResult("pending", f"{m} {v} not before {_iso(target.not_before)}", **info)
    live, cand = bs.link(CURRENT), bs.link(CANDIDATE)
    if live == (m, v):
        if cand is not None:
            bs.clear_candidate()
        accept()
        return RedeployResult("up-to-date", f"{m} {v} is live ({target.reason})", **info)
    if cand == (m, v):
        accept()
        return RedeployResult("in-shadow", f"{m} {v} is running in shadow", **info)
    refusal = bs.refused(m, v)
    if refusal is not None:
        when = refusal.get("desired_issued_at") or refusal.get("t", 0.0)
        if target.issued_at <= when:
            accept()
            return RedeployResult("skipped", f"{m} {v} was rolled back ({refusal.get('reason')}); "
                                             "waiting for a newer desired file", **info)
        bs.forget_refusal(m, v)
    bs.check_not_downgrade(m, v, target.allow_downgrade and cfg.deploy.allow_downgrade)
    prefix = f"models/{m}/{v}"
    files = {}
    for f in (MANIFEST, MODEL, SIGNATURE):
        data = _get(store, f"{prefix}/{f}", MAX_MODEL_BYTES if f == MODEL else MAX_SMALL_BYTES)
        if data is not None:
            files[f] = data
        elif f != SIGNATURE:
            raise DeployError(f"{prefix}/{f}: not in the store (desired by {target.source}; "
                              "was it published?)")
    staged = bs.stage(files, trusted_keys=list(cfg.model.trusted_keys),
                      expected_spec=cfg.feature_spec(), allow_unsigned=cfg.model.allow_unsigned,
                      where=prefix)
    if (staged.name, staged.version) != (m, v):
        raise DeployError(f"{prefix}/manifest.json: holds {staged.name} {staged.version}, not {m} {v}")
    accept()
    if live is None:
        bs.activate(m, v, by="redeploy (first install)")
        return RedeployResult("installed", f"{m} {v} installed as the first live model "
                                           f"({target.reason})", **info)
    bs.set_candidate(m, v, issued_at=target.issued_at)
    return RedeployResult("shadow", f"{m} {v} staged; shadow beside {live[1]} ({target.reason})",
                          **info)


def notify_gateway(state_dir: Path) -> None:
    """Ask a running gateway to look now (it polls its links anyway)."""
    from sensorml.gateway.client import call

    if not (state_dir / "gateway.json").exists():
        return
    try:
        call(state_dir, "/reload", {"by": "redeploy"}, timeout=2.0)
    except SensormlError as e:
        log.info("gateway not told (%s); its reload loop will see the change", e)


def sync_steps(cfg) -> list:
    """The download side's steps for ``sensorml sync`` (see :mod:`sensorml.sync.job`): one
    redeploy run per sync run; its outcome and the deployment state go into the
    heartbeat under ``steps.deploy``. None when the gateway is not set up for it
    (``model.bundle`` is not ``<state_dir>/bundles/current``)."""
    if cfg is None or cfg.model.bundle is None or os.path.normpath(cfg.model.bundle) != \
            os.path.normpath(Path(cfg.state_dir) / "bundles" / CURRENT):
        return []

    def deploy(job) -> dict:
        res = redeploy(cfg, job.store)
        return {**res.to_dict(), "state": deployment_state(cfg.state_dir)}

    deploy.name = "deploy"  # type: ignore[attr-defined]
    return [deploy]
