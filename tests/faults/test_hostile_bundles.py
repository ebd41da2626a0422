"""Hostile bundles: tampered, mis-signed, mismatched, escaping, linking and huge bundles are
each refused with their own exception class and a one-line message naming the file;
nothing is written outside; a running gateway keeps its model through every attempt.

(Desired-state files: the same checks on signed ``desired/*.json`` -- wrong key, flipped
bits, a file for another device -- are at the end; replay/downgrade ordering belongs to
the sync job and plugs in with it.)
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import tarfile
from pathlib import Path

import pytest

from sensorml.bundles.bundle import keygen, load_bundle, unpack_bundle, write_bundle
from sensorml.errors import (
    BundleFormatError,
    BundleHashError,
    BundleSignatureError,
    BundleSpecError,
    ModelError,
)

pytestmark = pytest.mark.timeout(120)


def _files(tree: Path) -> set[str]:
    return {str(p.relative_to(tree)) for p in tree.rglob("*")}


def _refused(path, cls, pub, **kw) -> str:
    with pytest.raises(BundleFormatError if cls is None else cls) as ei:
        load_bundle(path, trusted_keys=[str(pub)], **kw)
    assert type(ei.value) is cls, f"{type(ei.value).__name__}: {ei.value}"
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def _flip(src: Path, dst: Path, name: str, pos: int, bit: int) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    b = bytearray((dst / name).read_bytes())
    b[pos] ^= 1 << bit
    (dst / name).write_bytes(bytes(b))
    return dst


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    path.write_bytes(buf.getvalue())
    return path


def _info(name: str, data: bytes = b"", **kw) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.size = len(data)
    for k, v in kw.items():
        setattr(i, k, v)
    return i


def _sig_changed(sig_file: bytes, pos: int, bit: int) -> bool:
    """Does this flip change what the signature file says (its JSON or the signature
    bytes)? The ``alg``/``key``/``key_fingerprint`` fields are hints the verifier does not
    trust, and base64's unused low bits of the last character decode to the same bytes."""
    import base64
    import binascii

    b = bytearray(sig_file)
    b[pos] ^= 1 << bit
    try:
        old, new = json.loads(sig_file), json.loads(bytes(b))
        return base64.b64decode(new["signature"], validate=True) != \
            base64.b64decode(old["signature"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return True  # broken JSON or signature: must be refused


def test_every_flipped_bit_is_refused_with_its_own_error(tmp_path, bundle, keys, fault_report):
    rng = random.Random(5)
    pub = keys[1]
    sig = (bundle / "manifest.sig").read_bytes()
    counts, harmless = {}, 0
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    for name, cls, positions in (
        ("manifest.json", BundleSignatureError,
         rng.sample(range(len((bundle / "manifest.json").read_bytes())), 800)),
        ("manifest.sig", BundleSignatureError, range(len(sig))),
        ("model.onnx", BundleHashError,
         rng.sample(range(len((bundle / "model.onnx").read_bytes())), 300)),
    ):
        n = 0
        for pos in positions:
            bit = rng.randrange(8)
            if name == "manifest.sig" and not _sig_changed(sig, pos, bit):
                harmless += 1  # the same signature bytes: not a tampering
                continue
            good = (bundle / name).read_bytes()
            bad = bytearray(good)
            bad[pos] ^= 1 << bit
            (b / name).write_bytes(bytes(bad))
            with pytest.raises(cls) as ei:
                load_bundle(b, trusted_keys=[str(pub)])
            (b / name).write_bytes(good)
            assert type(ei.value) is cls and "\n" not in str(ei.value)
            n += 1
        counts[name] = n
    fault_report.add("hostile_bundles_bit_flips", refused=counts, accepted=0,
                     sig_flips_leaving_the_signature_unchanged=harmless)


def test_wrong_key_mismatch_and_archive_attacks(tmp_path, bundle, keys, tmp_path_factory,
                                                fault_report):
    pub = keys[1]
    man = json.loads((bundle / "manifest.json").read_text())
    onnx = (bundle / "model.onnx").read_bytes()
    other = keygen(tmp_path_factory.mktemp("other_keys"))
    outside = tmp_path / "outside"
    outside.mkdir()
    before = _files(tmp_path)
    refused = {}

    # signed by a key the gateway does not trust
    b = write_bundle(tmp_path / "wrongkey", man, onnx, other[0])
    refused["wrong_key"] = _refused(b, BundleSignatureError, pub)
    # unsigned
    b = write_bundle(tmp_path / "unsigned", man, onnx, None)
    refused["unsigned"] = _refused(b, BundleSignatureError, pub)
    # a validly signed manifest beside another model (swapped model.onnx)
    b = tmp_path / "swapped"
    shutil.copytree(bundle, b)
    (b / "model.onnx").write_bytes(onnx + b"\x00")
    refused["model_swapped"] = _refused(b, BundleHashError, pub)
    # signed manifest whose features differ from what the config produces
    from sensorml.edge.features import FeatureSpec

    spec = FeatureSpec.from_dict({**man["feature_spec"], "hop": 256})
    refused["spec_differs"] = _refused(bundle, BundleSpecError, pub, expected_spec=spec)
    # signed manifest that lies about its model's input width: the scorer refuses it
    from sensorml.edge.scorer import Scorer

    lie = dict(man, n_features=man["n_features"] - 1, feature_names=man["feature_names"][:-1])
    b = write_bundle(tmp_path / "lying", lie, onnx, keys[0])
    with pytest.raises(ModelError) as ei:
        Scorer(load_bundle(b, trusted_keys=[str(pub)]))
    refused["manifest_lies_about_model"] = str(ei.value)

    # archives: an entry escaping the directory, an absolute path, links, a huge file
    good = {n: (bundle / n).read_bytes() for n in ("manifest.json", "model.onnx", "manifest.sig")}
    members = [(_info(n, d), d) for n, d in good.items()]
    cases = {
        "escape_dotdot": [(_info("../outside/evil", b"x"), b"x"), *members],
        "escape_absolute": [(_info(f"{outside}/evil", b"x"), b"x"), *members],
        "symlink": [(_info("model.onnx", type=tarfile.SYMTYPE, linkname="/etc/passwd"), None),
                    *members[:1]],
        "hardlink": [(_info("model.onnx", type=tarfile.LNKTYPE, linkname="../outside/x"), None),
                     *members[:1]],
        "device": [(_info("model.onnx", type=tarfile.CHRTYPE), None), *members[:1]],
    }
    for name, mem in cases.items():
        a = _tar(tmp_path / f"{name}.tar.gz", mem)
        refused[name] = _refused(a, BundleFormatError, pub)
        dest = tmp_path / f"unpacked-{name}"
        with pytest.raises(BundleFormatError):
            unpack_bundle(a, dest)
        assert not dest.exists()
    # a huge entry: only its header (the size is refused before any data is read)
    huge = tmp_path / "huge.tar.gz"
    huge.write_bytes(gzip.compress(_info("model.onnx", size=300 << 20).tobuf(tarfile.GNU_FORMAT)))
    refused["huge_archive_entry"] = _refused(huge, BundleFormatError, pub)
    # a huge model file in a directory bundle (sparse: costs no disk)
    b = tmp_path / "hugedir"
    shutil.copytree(bundle, b)
    os.truncate(b / "model.onnx", 300 << 20)
    refused["huge_model_file"] = _refused(b, BundleFormatError, pub)
    # directory bundles follow symlinks, but what they read is still checked: a link to
    # another file fails the signed hash, a link to a device is not a regular file
    b = tmp_path / "linkdir"
    shutil.copytree(bundle, b)
    (b / "model.onnx").unlink()
    (b / "model.onnx").symlink_to(tmp_path / "swapped" / "model.onnx")
    refused["symlinked_model_other_file"] = _refused(b, BundleHashError, pub)
    (b / "model.onnx").unlink()
    (b / "model.onnx").symlink_to("/dev/zero")
    refused["symlinked_model_device"] = _refused(b, BundleFormatError, pub)

    assert not (outside / "evil").exists() and not list(outside.iterdir())
    assert not (tmp_path.parent / "evil").exists() and not Path("/evil").exists()
    made = _files(tmp_path) - before
    assert all(m.split("/")[0] in {"wrongkey", "unsigned", "swapped", "lying", "hugedir",
                                   "linkdir"} or m.endswith(".tar.gz") for m in made), made
    fault_report.add("hostile_bundles_refused", cases=len(refused),
                     messages={k: v.split(": ", 1)[-1][:90] for k, v in refused.items()})


BODY = '''
[source]
url = "sim://pump?rate=25600&seed=4"
[model]
bundle = "{live}"
trusted_keys = ["{pub}"]
watch = "100ms"
'''


def test_running_gateway_keeps_its_model_through_hostile_reloads(
        tmp_path, bundle, keys, tmp_path_factory, fx, procs, fault_report):
    """One gateway process; its bundle path is a symlink swapped to each hostile bundle."""
    pub = keys[1]
    man = json.loads((bundle / "manifest.json").read_text())
    onnx = (bundle / "model.onnx").read_bytes()
    store = tmp_path / "bundles"
    shutil.copytree(bundle, store / "v1")
    live = tmp_path / "current"
    live.symlink_to(store / "v1")

    def point(target: Path) -> None:
        tmp = tmp_path / "current.tmp"
        tmp.symlink_to(target)
        os.replace(tmp, live)

    cfg = fx.write_config(tmp_path, BODY.format(live=live, pub=pub))
    gw = fx.start_gateway(cfg)
    procs.append(gw)
    state = tmp_path / "state"
    fx.wait_until(lambda: fx.status(state)["windows"] > 5, 10, "windows scored")
    other = keygen(tmp_path_factory.mktemp("other_keys2"))
    man2 = dict(man, version="2")
    hostile = {
        "flipped_model": _flip(bundle, store / "flip", "model.onnx", 100, 3),
        "flipped_manifest": _flip(bundle, store / "flipm", "manifest.json", 40, 1),
        "wrong_key": write_bundle(store / "wrongkey", man2, onnx, other[0]),
        "unsigned": write_bundle(store / "unsigned", man2, onnx, None),
        "escape_archive": _tar(store / "escape.tar.gz", [
            (_info("../../evil", b"x"), b"x"),
            *[(_info(n, (bundle / n).read_bytes()), (bundle / n).read_bytes())
              for n in ("manifest.json", "model.onnx", "manifest.sig")]]),
    }
    refusals = 0
    for name, target in hostile.items():
        point(target)
        ev = fx.log_json(gw, lambda m: m.startswith("model refused"), 10, f"refuse {name}")
        assert "keeping model 1" in ev["msg"], ev["msg"]
        refusals += 1
        st = fx.status(state)
        assert st["model"]["version"] == "1" and st["model_error"]
    w = fx.status(state)["windows"]
    fx.wait_until(lambda: fx.status(state)["windows"] > w + 5, 10, "scoring on with model 1")
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()
    # and a good version 2 still goes live afterwards
    point(write_bundle(store / "v2", man2, onnx, keys[0]))
    fx.log_json(gw, lambda m: m.startswith("model pump 2 loaded"), 10, "load version 2")
    db = state / "buffer.db"
    assert fx.rows(db, "SELECT count(*) FROM scores WHERE model_version = '1'")[0][0] > 0
    fault_report.add("hostile_bundles_gateway", reload_attempts=refusals,
                     model_kept="1", then_loaded="2")


def test_hostile_desired_state_files(tmp_path, keys, tmp_path_factory, fault_report):
    from sensorml.bundles.desired import DesiredError, make_desired, verify_desired

    other = keygen(tmp_path_factory.mktemp("other_keys3"))
    pub = [str(keys[1])]
    kw = dict(where="desired/pump-7.json", expect_scope="device", expect_target="pump-7")
    data, sig = make_desired("device", "pump-7", "pump", "3", key=keys[0])
    assert verify_desired(data, sig, pub, **kw).version == "3"
    refused = {}
    cases = {
        "wrong_key": make_desired("device", "pump-7", "pump", "3", key=other[0]),
        "unsigned": (data, None),
        "for_another_device": make_desired("device", "pump-8", "pump", "3", key=keys[0]),
    }
    rng = random.Random(7)
    for i in rng.sample(range(len(data)), 40):
        b = bytearray(data)
        b[i] ^= 1 << rng.randrange(8)
        cases[f"flip_{i}"] = (bytes(b), sig)
    for name, (d, s) in cases.items():
        with pytest.raises(DesiredError) as ei:
            verify_desired(d, s, pub, **kw)
        assert "\n" not in str(ei.value)
        refused[name] = str(ei.value)[:90]
    fault_report.add("hostile_desired_files", refused=len(refused),
                     examples={k: v for k, v in refused.items() if not k.startswith("flip")})
