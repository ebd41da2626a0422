"""The per-gateway store policy of ``deploy/README.md``, enforced.

moto's S3 server on 127.0.0.1 with its IAM authentication turned on stands in for S3 or
MinIO (neither runs here): it checks the SigV4 signature of every request and the user's
policy against the object's ARN. The policy is read from the README itself, so the
document an operator copies is the one tested. The sync job runs as a real process with
pump-07's keys; then pump-07's keys try everything they must not do.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sensorml.buffer.db import Buffer
from sensorml.bundles.bundle import keygen
from sensorml.sync.stores import CloudError
from sensorml.sync.stores.s3 import S3Store

pytest.importorskip("minio")
boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

README = Path(__file__).resolve().parents[3] / "deploy" / "README.md"
T0 = 1.764e9


def readme_policy() -> dict:
    blocks = re.findall(r"```json\n(.*?)```", README.read_text(), re.S)
    (doc,) = [b for b in blocks if '"s3:PutObject"' in b]
    return json.loads(doc)


@pytest.fixture(scope="module")
def plant():
    """A bucket ``plant-sensorml`` and a user ``pump-07`` with the README's policy; then
    authentication on. Yields (endpoint, pump-07's keys)."""
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    ep = f"http://{host}:{port}"
    kw = dict(endpoint_url=ep, region_name="us-east-1", aws_access_key_id="setup",
              aws_secret_access_key="setup")
    boto3.client("s3", **kw).create_bucket(Bucket="plant-sensorml")
    iam = boto3.client("iam", **kw)
    iam.create_user(UserName="pump-07")
    iam.put_user_policy(UserName="pump-07", PolicyName="gw-pump-07",
                        PolicyDocument=json.dumps(readme_policy()))
    key = iam.create_access_key(UserName="pump-07")["AccessKey"]
    before = _auth_after(ep, "0")  # authenticate from the next request on
    yield ep, {"SENSORML_S3_ACCESS_KEY": key["AccessKeyId"],
               "SENSORML_S3_SECRET_KEY": key["SecretAccessKey"]}
    _auth_after(ep, before)  # the setting is moto's, for the whole process: put it back
    srv.stop()


def _auth_after(ep: str, count: str) -> str:
    """Set moto's count of unauthenticated requests; returns the previous one."""
    r = urllib.request.urlopen(urllib.request.Request(
        f"{ep}/moto-api/reset-auth", data=count.encode(), method="POST",
        headers={"Content-Type": "text/plain"}), timeout=10)
    return json.loads(r.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]


def test_the_sync_job_runs_with_the_policy(plant, tmp_path):
    ep, keys = plant
    state = tmp_path / "state"
    state.mkdir()
    with Buffer(state / "buffer.db", device="pump-07") as b:
        b.write(events=[b.event_row("alarm", {}, T0)], enforce=False)
    _, pub = keygen(tmp_path / "keys")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'device_id = "pump-07"\nstate_dir = "{state}"\n[source]\nurl = "sim://pump"\n'
                   f'[model]\nbundle = "{state / "bundles" / "current"}"\ntrusted_keys = ["{pub}"]\n'
                   f'[sync]\nstore = "s3://plant-sensorml/site-a"\nendpoint = "{ep}"\n')
    r = subprocess.run([sys.executable, "-m", "sensorml.cli", "sync", "--config", str(cfg),
                        "--once"], capture_output=True, text=True, timeout=60,
                       env={**_env(), **keys})
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["uploaded"] == {"events": 1}
    # a missing desired file is "none" (404 thanks to ListBucket), not "offline" (403)
    assert rep["steps"]["deploy"]["action"] == "none", rep["steps"]["deploy"]
    st = S3Store("plant-sensorml", "site-a", endpoint=ep, env=keys)
    assert json.loads(st.get("status/pump-07.json"))["device"] == "pump-07"


@pytest.mark.parametrize("name", ["ingest/pump-08/2025/11/24/events-000000000001-000000000001"
                                  ".smlb.gz", "labels/pump-08/2025/11/24/x.smlb.gz",
                                  "status/pump-08.json", "desired/pump-07.json",
                                  "desired/default.json", "models/pump/9/manifest.json",
                                  "lake/events/x.parquet"])
def test_pump_07s_keys_cannot_write_anywhere_else(plant, name):
    ep, keys = plant
    st = S3Store("plant-sensorml", "site-a", endpoint=ep, env=keys)
    with pytest.raises(CloudError, match=f"cannot put {re.escape(name)}: AccessDenied"):
        st.put(name, b"{}")


def test_pump_07s_keys_cannot_read_another_gateways_data(plant):
    ep, keys = plant
    st = S3Store("plant-sensorml", "site-a", endpoint=ep, env=keys)
    st.put("ingest/pump-07/2025/11/24/a.smlb.gz", b"x")
    assert st.exists("ingest/pump-07/2025/11/24/a.smlb.gz")  # the HEAD that settles a batch
    with pytest.raises(CloudError, match="AccessDenied"):
        st.get("status/pump-08.json")
    with pytest.raises(CloudError, match="AccessDenied"):
        st.delete("ingest/pump-07/2025/11/24/a.smlb.gz")


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("SENSORML_S3", "AWS_"))}
