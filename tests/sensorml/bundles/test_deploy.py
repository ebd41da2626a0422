"""The gateway's bundle store and one redeploy run against a ``file://`` store: verified
staging, atomic links, no downgrade, replayed desired files refused, tampered or wrongly
signed downloads refused with nothing written outside the bundle store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.bundles import linear_onnx

from sensorml.bundles.bundle import write_bundle
from sensorml.bundles.desired import make_desired
from sensorml.bundles.fetch import open_store, redeploy
from sensorml.bundles.signing import keygen
from sensorml.bundles.staging import BundleStore, DeployError, IncompatibleBundle, deployment_state
from sensorml.config import parse_config
from sensorml.errors import BundleHashError, BundleSignatureError, BundleSpecError

T0 = 1_790_000_000.0


def cfg_of(tmp_path: Path, pub: Path, **deploy):
    data = {"device_id": "pump-1", "state_dir": str(tmp_path / "state"),
            "source": {"url": "sim://pump?rate=8000"},
            "model": {"bundle": str(tmp_path / "state" / "bundles" / "current"),
                      "trusted_keys": [str(pub)]},
            "sync": {"store": f"file://{tmp_path / 'cloud'}"}, "deploy": deploy}
    return parse_config(data, tmp_path)


def manifest_for(cfg, version: str, **over) -> dict:
    spec = cfg.feature_spec()
    names = list(spec.names())
    m = {"name": "pump", "version": version, "feature_spec": spec.to_dict(), "feature_names": names,
         "input_name": "x", "output_name": "score",
         "thresholds": {"warn": 0.1, "alarm": 0.2, "trip": 0.3}, "threshold_method": "fixed",
         "fingerprint": {}, "metrics": {}, "model_family": "linear", "n_features": len(names),
         "training": {"rows": 0}}
    m.update(over)
    return m


def publish(cfg, cloud: Path, version: str, key: Path | None, **over) -> Path:
    m = manifest_for(cfg, version, **over)
    return write_bundle(cloud / "models" / "pump" / version, m, linear_onnx(m["n_features"]), key)


def desire(cloud: Path, version: str, key: Path, *, t: float, target="default", scope="fleet",
           **kw) -> tuple[bytes, bytes]:
    data, sig = make_desired(scope, target, "pump", version, issued_at=t, key=key, **kw)
    (cloud / "desired").mkdir(parents=True, exist_ok=True)
    (cloud / "desired" / f"{target}.json").write_bytes(data)
    (cloud / "desired" / f"{target}.json.sig").write_bytes(sig)
    return data, sig


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file and link under *root* (what a refused download must not change)."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def kp(tmp_path_factory):
    return keygen(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def setup(tmp_path, kp):
    cfg = cfg_of(tmp_path, kp[1])
    cloud = tmp_path / "cloud"
    publish(cfg, cloud, "1", kp[0])
    desire(cloud, "1", kp[0], t=T0)
    res = redeploy(cfg, open_store(cfg.sync.store), now=T0 + 1)
    assert res.action == "installed", res
    return cfg, cloud, BundleStore(cfg.state_dir / "bundles")


def test_first_install_then_new_version_goes_to_shadow_then_live(setup, kp):
    cfg, cloud, bs = setup
    assert deployment_state(cfg.state_dir)["live"] == {"name": "pump", "version": "1"}
    staged = bs.path("pump", "1")
    assert (staged / "model.onnx").stat().st_mode & 0o222 == 0  # staged bundles are read-only
    publish(cfg, cloud, "2", kp[0])
    desire(cloud, "2", kp[0], t=T0 + 10)
    res = redeploy(cfg, open_store(cfg.sync.store), now=T0 + 11)
    assert res.action == "shadow" and "beside 1" in res.message
    st = deployment_state(cfg.state_dir)
    assert st["candidate"]["version"] == "2" and st["live"]["version"] == "1"
    assert redeploy(cfg, now=T0 + 12).action == "in-shadow"  # the next sync run: nothing new
    bs.activate("pump", "2", by="test")  # what the gateway does after a good shadow run
    st = deployment_state(cfg.state_dir)
    assert (st["live"]["version"], st["last_good"]["version"], st["candidate"]) == ("2", "1", None)
    assert os.readlink(bs.root / "current") == "pump/2"
    assert redeploy(cfg, now=T0 + 13).action == "up-to-date"


@pytest.mark.parametrize("damage", ["flipped_model_byte", "wrong_key", "unsigned", "edited_manifest",
                                    "other_features", "needs_newer_features", "needs_newer_sensorml"])
def test_bad_downloads_are_refused_and_nothing_changes(setup, kp, tmp_path, damage):
    cfg, cloud, bs = setup
    other = keygen(tmp_path / "other")
    key = {"wrong_key": other[0], "unsigned": None}.get(damage, kp[0])
    over = {}
    if damage == "other_features":
        over["feature_spec"] = {**manifest_for(cfg, "2")["feature_spec"], "hop": 256}
    if damage == "needs_newer_features":
        over["feature_spec"] = {**manifest_for(cfg, "2")["feature_spec"], "feature_code_version": "7"}
    if damage == "needs_newer_sensorml":
        over["requires"] = {"sensorml": "9.1"}
    v2 = publish(cfg, cloud, "2", key, **over)
    if damage == "flipped_model_byte":
        data = bytearray((v2 / "model.onnx").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (v2 / "model.onnx").write_bytes(bytes(data))
    if damage == "edited_manifest":  # thresholds loosened after signing
        m = json.loads((v2 / "manifest.json").read_text())
        m["thresholds"]["trip"] = 1e9
        (v2 / "manifest.json").write_text(json.dumps(m))
    desire(cloud, "2", kp[0], t=T0 + 10)
    before = tree(tmp_path / "state")
    res = redeploy(cfg, now=T0 + 11)
    assert res.action == "refused"
    expect = {"flipped_model_byte": "sha256", "wrong_key": "untrusted key",
              "unsigned": "manifest.sig: missing", "edited_manifest": "signature does not match",
              "other_features": "hop: bundle 256, config 512",
              "needs_newer_features": "needs feature code version 7; this gateway computes 1",
              "needs_newer_sensorml": "needs sensorml >= 9.1; this gateway runs 0.1.0"}[damage]
    assert expect in res.message and "models/pump/2" in res.message
    after = tree(tmp_path / "state")
    after.pop("bundles/deploy.json")  # only the outcome is recorded (for the heartbeat)
    before.pop("bundles/deploy.json")
    assert after == before  # nothing staged, no temp left, links untouched
    assert deployment_state(cfg.state_dir)["last_redeploy"]["action"] == "refused"


def test_exception_classes_of_staging(setup, kp, tmp_path):
    cfg, cloud, bs = setup
    good = publish(cfg, cloud, "5", kp[0])
    files = {f: (good / f).read_bytes() for f in ("manifest.json", "model.onnx", "manifest.sig")}
    with pytest.raises(BundleHashError):
        bs.stage({**files, "model.onnx": files["model.onnx"] + b"x"}, trusted_keys=[kp[1]])
    with pytest.raises(BundleSignatureError):
        bs.stage({k: v for k, v in files.items() if k != "manifest.sig"}, trusted_keys=[kp[1]])
    with pytest.raises(BundleSpecError):
        spec = cfg_of(tmp_path, kp[1]).feature_spec().to_dict()
        bs.stage(files, trusted_keys=[kp[1]], expected_spec={**spec, "window": 2048})
    with pytest.raises(IncompatibleBundle, match="bundle format 2 needs sensorml >= 2.0"):
        m = json.loads(files["manifest.json"])
        bs.stage({**files, "manifest.json": json.dumps(
            {**m, "format_version": 2, "requires": {"sensorml": "2.0"}}).encode()},
            trusted_keys=[kp[1]])
    assert bs.stage(files, trusted_keys=[kp[1]]).new is True
    assert bs.stage(files, trusted_keys=[kp[1]]).new is False  # idempotent re-download


def test_a_replayed_old_desired_file_is_refused(setup, kp):
    cfg, cloud, bs = setup
    old = ((cloud / "desired" / "default.json").read_bytes(),
           (cloud / "desired" / "default.json.sig").read_bytes())
    publish(cfg, cloud, "2", kp[0])
    desire(cloud, "2", kp[0], t=T0 + 10)
    assert redeploy(cfg, now=T0 + 11).action == "shadow"
    bs.activate("pump", "2", by="test")
    # someone with write access to the store puts back the old, validly signed file
    (cloud / "desired" / "default.json").write_bytes(old[0])
    (cloud / "desired" / "default.json.sig").write_bytes(old[1])
    res = redeploy(cfg, now=T0 + 20)
    assert res.action == "refused" and "replayed desired file" in res.message
    assert deployment_state(cfg.state_dir)["live"]["version"] == "2"


def test_downgrade_needs_allow_downgrade_in_the_desired_file(setup, kp, tmp_path):
    cfg, cloud, bs = setup
    publish(cfg, cloud, "2", kp[0])
    desire(cloud, "2", kp[0], t=T0 + 10)
    redeploy(cfg, now=T0 + 11)
    bs.activate("pump", "2", by="test")
    desire(cloud, "1", kp[0], t=T0 + 20)  # newer file, older version
    res = redeploy(cfg, now=T0 + 21)
    assert res.action == "refused" and "refusing a downgrade" in res.message
    desire(cloud, "1", kp[0], t=T0 + 30, allow_downgrade=True)
    res = redeploy(cfg, now=T0 + 31)
    assert res.action == "shadow" and deployment_state(cfg.state_dir)["candidate"]["version"] == "1"
    # a gateway whose owner forbids downgrades from the cloud keeps refusing
    strict = cfg_of(tmp_path, kp[1], allow_downgrade=False)
    bs.clear_candidate()
    desire(cloud, "1", kp[0], t=T0 + 40, allow_downgrade=True)
    assert redeploy(strict, now=T0 + 41).action == "refused"


def test_rolled_back_version_is_not_retried_until_a_newer_desired_file(setup, kp):
    cfg, cloud, bs = setup
    publish(cfg, cloud, "2", kp[0])
    desire(cloud, "2", kp[0], t=T0 + 10)
    assert redeploy(cfg, now=T0 + 11).action == "shadow"
    bs.reject("pump", "2", "alarm rate 40% exceeds the bound 2%", by="shadow")
    st = deployment_state(cfg.state_dir)
    assert st["candidate"] is None and "alarm rate" in st["last_rollback"]["reason"]
    res = redeploy(cfg, now=T0 + 12)
    assert res.action == "skipped" and "alarm rate" in res.message
    desire(cloud, "2", kp[0], t=T0 + 50)  # the operator asks again
    assert redeploy(cfg, now=T0 + 51).action == "shadow"


def test_not_before_and_device_override(setup, kp):
    cfg, cloud, bs = setup
    publish(cfg, cloud, "3", kp[0])
    desire(cloud, "3", kp[0], t=T0 + 10, not_before=T0 + 100)
    assert redeploy(cfg, now=T0 + 11).action == "pending"
    publish(cfg, cloud, "2", kp[0])
    desire(cloud, "2", kp[0], t=T0 + 12, scope="device", target="pump-1")
    res = redeploy(cfg, now=T0 + 13)
    assert (res.action, res.version, res.source) == ("shadow", "2", "desired/pump-1.json")


def test_manual_rollback_to_last_good_or_a_staged_version(setup, kp):
    cfg, cloud, bs = setup
    for v, t in (("2", 10), ("3", 20)):
        publish(cfg, cloud, v, kp[0])
        desire(cloud, v, kp[0], t=T0 + t)
        redeploy(cfg, now=T0 + t + 1)
        bs.activate("pump", v, by="test")
    assert bs.rollback(reason="operator saw false alarms") == ("pump", "2")
    st = deployment_state(cfg.state_dir)
    assert (st["live"]["version"], st["last_good"]["version"]) == ("2", "3")
    assert st["last_rollback"]["reason"] == "operator saw false alarms"
    assert bs.rollback(to="1") == ("pump", "1")
    with pytest.raises(DeployError, match=r"version '7' is not staged \(staged: 1, 2, 3\)"):
        bs.rollback(to="7")
    # the version rolled away from is not redeployed by the same desired file
    assert redeploy(cfg, now=T0 + 40).action in ("skipped", "refused")
