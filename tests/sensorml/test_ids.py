"""One device-id rule everywhere: ``check-config`` refuses an id that could never sync (before,
it accepted ``..``, ``.hidden``, ``pump 07``, ``pümpe-7`` and a Unicode hyphen, and every sync
then failed on the store's name rule while the buffer evicted), and so do the sync job and
desired-state files. ``PUMP-07`` is refused: it and ``pump-07`` are one folder on a share
that folds case."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sensorml.bundles.desired import DesiredError, DesiredState, make_desired
from sensorml.cli import main
from sensorml.errors import StoreError
from sensorml.ids import DEVICE_ID_RULE
from sensorml.sync.job import SyncJob
from sensorml.sync.stores import FileStore

BAD = ["..", ".hidden", "pump 07", "pümpe-7", "pump\u20107", "PUMP-07", "-pump", "", "p" * 65,
       "pump/07", "pump-07\n"]


def config(tmp_path, device_id: str, fleet: str = "default"):
    p = tmp_path / "gateway.toml"
    p.write_text(f'device_id = {json.dumps(device_id)}\n[source]\nurl = "sim://pump"\n'
                 f'[deploy]\nfleet = {json.dumps(fleet)}\n', encoding="utf-8")
    return p


def test_check_config_refuses_an_id_that_cannot_sync_with_the_rule_in_the_message(tmp_path):
    cfg = config(tmp_path, "pump 07")
    r = subprocess.run([sys.executable, "-m", "sensorml.cli", "check-config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == (f"sensorml check-config: error: {cfg}: device_id: 'pump 07' is "
                                f"not a valid device id: use {DEVICE_ID_RULE}")


@pytest.mark.parametrize("dev", BAD)
def test_every_bad_id_fails_check_config(tmp_path, capsys, dev):
    assert main(["check-config", str(config(tmp_path, dev))]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"device_id: {dev!r} is not a valid device id" in err


@pytest.mark.parametrize("dev", ["pump-07", "gw1", "pump_07", "7-pump", "p" * 64])
def test_good_ids_pass(tmp_path, capsys, dev):
    assert main(["check-config", str(config(tmp_path, dev))]) == 0
    assert json.loads(capsys.readouterr().out)["device_id"] == dev


def test_the_fleet_name_follows_the_same_rule(tmp_path, capsys):
    assert main(["check-config", str(config(tmp_path, "pump-07", "Site A"))]) == 2
    assert "deploy.fleet: 'Site A' is not a valid fleet name" in capsys.readouterr().err


@pytest.mark.parametrize("dev", ["PUMP-07", "..", "pump 07"])
def test_the_sync_job_and_desired_files_refuse_them_too(tmp_path, dev):
    with pytest.raises(StoreError, match=f"sync: device: {dev!r} is not a valid device id"):
        SyncJob(tmp_path / "b.db", FileStore(tmp_path / "cloud"), dev)
    with pytest.raises(DesiredError, match=r"target: .* is not a valid device id"):
        make_desired("device", dev, "pump", "3")
    doc = {"schema": 1, "scope": "fleet", "target": "pumps", "model": "pump", "version": "3",
           "devices": {dev: "2"}, "issued_at": "2026-11-26T16:00:00Z"}
    with pytest.raises(DesiredError, match=r"desired/pumps.json: devices: .* is not a valid "
                                           "device id"):
        DesiredState.from_dict(doc, "desired/pumps.json")
