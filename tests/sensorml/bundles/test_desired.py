"""Desired-state files: signed, meant for this device, resolved device > fleet override >
canary > fleet default, with the canary chosen by a stable hash of the device id."""

from __future__ import annotations

import json
import re

import pytest

from sensorml.bundles.desired import (
    DesiredError,
    DesiredState,
    canary_bucket,
    make_desired,
    resolve,
    verify_desired,
)
from sensorml.bundles.signing import keygen

T0 = 1_790_000_000.0


@pytest.fixture(scope="module")
def kp(tmp_path_factory):
    return keygen(tmp_path_factory.mktemp("k"))


def doc(scope="fleet", target="pumps", version="3", **kw) -> DesiredState:
    data, _ = make_desired(scope, target, "pump", version, issued_at=T0, **kw)
    return DesiredState.from_dict(json.loads(data), f"desired/{target}.json")


def test_device_file_overrides_fleet_file_and_fleet_entry_overrides_canary():
    fleet = doc(canary={"share": 1.0, "version": "4"}, devices={"pump-7": "2"})
    assert resolve("pumps", fleet, "pump-1").version == "4"  # everyone is a canary at 100 %
    assert resolve("pumps", fleet, "pump-7").version == "2"  # the fleet's own override wins
    dev = doc("device", "pump-1", "5")
    t = resolve("pumps", fleet, "pump-1", dev)
    assert (t.version, t.reason) == ("5", "device file pump-1")
    assert resolve("pumps", None, "pump-1") is None
    assert resolve("pumps", doc(), "pump-9").reason == "fleet pumps default"


def test_canary_share_is_deterministic_proportional_and_grows_monotonically():
    devices = [f"gw-{i:04d}" for i in range(2000)]
    small = {d for d in devices if resolve("f", doc(target="f", canary={"share": 0.1, "version": "4"}),
                                           d).version == "4"}
    large = {d for d in devices if resolve("f", doc(target="f", canary={"share": 0.3, "version": "4"}),
                                           d).version == "4"}
    assert 0.07 < len(small) / len(devices) < 0.13
    assert 0.26 < len(large) / len(devices) < 0.34
    assert small <= large  # raising the share keeps the devices that already run it
    assert canary_bucket("gw-1", "f", "4") == canary_bucket("gw-1", "f", "4")
    # another canary version picks another sample of devices (not always the same few)
    other = {d for d in devices if canary_bucket(d, "f", "5") < 0.1}
    assert other != small


def test_signed_file_verifies_and_tampered_or_foreign_signatures_are_refused(kp, tmp_path):
    data, sig = make_desired("fleet", "pumps", "pump", "3", issued_at=T0, key=kp[0])
    d = verify_desired(data, sig, [kp[1]], where="desired/pumps.json", expect_scope="fleet",
                       expect_target="pumps")
    assert (d.model, d.version, d.issued_at) == ("pump", "3", T0)

    tampered = data.replace(b'"3"', b'"9"')
    with pytest.raises(DesiredError, match="signature does not match"):
        verify_desired(tampered, sig, [kp[1]], where="desired/pumps.json", expect_scope="fleet",
                       expect_target="pumps")
    other = keygen(tmp_path / "other")
    data2, sig2 = make_desired("fleet", "pumps", "pump", "3", issued_at=T0, key=other[0])
    with pytest.raises(DesiredError, match="untrusted key"):
        verify_desired(data2, sig2, [kp[1]], where="desired/pumps.json", expect_scope="fleet",
                       expect_target="pumps")
    with pytest.raises(DesiredError, match=r"desired/pumps.json.sig: missing"):
        verify_desired(data, None, [kp[1]], where="desired/pumps.json", expect_scope="fleet",
                       expect_target="pumps")


def test_a_signed_file_for_another_device_copied_here_is_refused(kp):
    data, sig = make_desired("device", "pump-2", "pump", "9", issued_at=T0, key=kp[0])
    with pytest.raises(DesiredError, match="signed for device 'pump-2', not device 'pump-1'"):
        verify_desired(data, sig, [kp[1]], where="desired/pump-1.json", expect_scope="device",
                       expect_target="pump-1")


@pytest.mark.parametrize(("change", "msg"), [
    ({"version": "../x"}, "version: '../x' is not a valid name"),
    ({"issued_at": "yesterday"}, "issued_at: 'yesterday' is not an ISO 8601 time"),
    ({"issued_at": "2026-11-26T16:00:00"}, "has no time zone"),
    ({"canary": {"share": 1.5, "version": "4"}}, "canary.share must be a number in 0..1"),
    ({"canary": {"share": 0.5}}, "canary.share is given without canary.version"),
    ({"scope": "site"}, "scope must be 'fleet' or 'device'"),
    ({"schema": 2}, "schema 2 is not supported"),
])
def test_malformed_files_name_the_field(change, msg):
    d = {"schema": 1, "scope": "fleet", "target": "pumps", "model": "pump", "version": "3",
         "issued_at": "2026-11-26T16:00:00Z", **change}
    with pytest.raises(DesiredError, match=re.escape(msg)):
        DesiredState.from_dict(d, "desired/pumps.json")


def test_the_desired_command_writes_a_signed_file_gateways_accept(kp, tmp_path, capsys):
    from sensorml.cli import main

    cloud = tmp_path / "cloud"
    assert main(["desired", "--store", f"file://{cloud}", "--fleet", "pumps", "--model", "pump",
                 "--version", "3", "--canary-share", "0.1", "--canary-version", "4",
                 "--key", str(kp[0])]) == 0
    assert "desired/pumps.json: pump 3, canary 10% -> 4" in capsys.readouterr().out
    d = verify_desired((cloud / "desired/pumps.json").read_bytes(),
                       (cloud / "desired/pumps.json.sig").read_bytes(), [kp[1]],
                       where="desired/pumps.json", expect_scope="fleet", expect_target="pumps")
    assert (d.version, d.canary_version, d.canary_share) == ("3", "4", 0.1)
    assert main(["desired", "--store", f"file://{cloud}", "--fleet", "pumps", "--model", "pump",
                 "--version", "3", "--canary-share", "0.1", "--key", str(kp[0])]) == 2
    assert "canary.share is given without canary.version" in capsys.readouterr().err
