"""The commands that move models to the fleet: ``keygen``, ``desired``, ``redeploy`` and
``rollback`` (wiring as in :mod:`sensorml.cli.tree`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sensorml.cli.ops import config


def add_keygen(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, help="folder for signing.key (private) and signing.pub")
    p.set_defaults(fn=cmd_keygen)


def cmd_keygen(a: argparse.Namespace) -> int:
    from sensorml.bundles.signing import fingerprint, keygen, load_public_key

    priv, pub = keygen(Path(a.dir))
    print(f"private key {priv} (mode 0600; keep it on the training side)")
    print(f"public key  {pub} fingerprint {fingerprint(load_public_key(pub))} "
          "(list it in model.trusted_keys of each gateway)")
    return 0


def add_desired(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="file:///path or s3://bucket/prefix")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--fleet", help="fleet name (the gateways' deploy.fleet)")
    who.add_argument("--device", help="one device id (its file overrides its fleet's)")
    p.add_argument("--model", required=True, help="bundle name")
    p.add_argument("--version", required=True, help="bundle version (published under models/)")
    p.add_argument("--canary-share", type=float, default=0.0,
                   help="share of the fleet's devices that run --canary-version first, 0..1")
    p.add_argument("--canary-version", help="version the canary devices run")
    p.add_argument("--allow-downgrade", action="store_true", help="permit an older version")
    p.add_argument("--key", required=True, help="Ed25519 private key (signing.key)")
    p.set_defaults(fn=cmd_desired)


def cmd_desired(a: argparse.Namespace) -> int:
    from sensorml.bundles.desired import make_desired
    from sensorml.sync.stores import open_store

    extra: dict[str, Any] = {}
    if a.canary_share:
        extra["canary"] = {"share": a.canary_share, "version": a.canary_version}
    if a.allow_downgrade:
        extra["allow_downgrade"] = True
    scope, target = ("fleet", a.fleet) if a.fleet else ("device", a.device)
    data, sig = make_desired(scope, target, a.model, a.version, key=a.key, **extra)
    store = open_store(a.store)
    store.put(f"desired/{target}.json.sig", sig or b"")
    store.put(f"desired/{target}.json", data)
    print(f"desired/{target}.json: {a.model} {a.version}"
          + (f", canary {a.canary_share:.0%} -> {a.canary_version}" if a.canary_share else ""))
    return 0


def add_redeploy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="gateway.toml (its deploy, sync and state_dir)")
    p.add_argument("--store", help="store URL (default: sync.store of the config)")
    p.set_defaults(fn=cmd_redeploy)


def cmd_redeploy(a: argparse.Namespace) -> int:
    from sensorml.bundles.fetch import open_store, redeploy

    cfg = config(a.config)
    res = redeploy(cfg, open_store(a.store or cfg.sync.store, cfg))
    print(json.dumps(res.to_dict()), flush=True)
    return 1 if res.action == "refused" else 0


def add_rollback(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="gateway.toml (its state_dir holds the bundles)")
    p.add_argument("--to", metavar="VERSION", help="a staged version (default: last_good)")
    p.add_argument("--reason", default="manual rollback", help="recorded for the heartbeat")
    p.add_argument("--by", default="sensorml rollback", help="who rolls back (recorded)")
    p.set_defaults(fn=cmd_rollback)


def cmd_rollback(a: argparse.Namespace) -> int:
    from sensorml.bundles.fetch import notify_gateway
    from sensorml.bundles.staging import CURRENT, BundleStore

    cfg = config(a.config)
    bs = BundleStore(cfg.state_dir / "bundles")
    before = bs.link(CURRENT)
    name, version = bs.rollback(a.to, reason=a.reason, by=a.by)
    print(f"rolled back to {name} {version}" + (f" (was {before[1]})" if before else ""))
    notify_gateway(cfg)
    return 0
