"""The sync job's heartbeat says when the gateway has stopped answering: a real gateway
process (reading the simulator's real pty), ``kill -STOP`` as the hang, the real sync
job writing ``status/<device>.json`` to a real folder store."""

from __future__ import annotations

import json
import os
import signal

import pytest

from sensorml.sync.job import SyncJob
from sensorml.sync.stores import FileStore

pytestmark = pytest.mark.timeout(120)


def test_the_heartbeat_reports_a_gateway_that_stopped_answering(tmp_path, procs, e2e):
    sim, ends = e2e.start_sim(tmp_path, "--serial", "--rate", "8000")
    procs.append(sim)
    cfg = e2e.write_gateway_config(tmp_path, f'''
[source]
url = "serial://{ends['serial']}?format=frames"
channels = ["ax", "ay", "az"]
rate = 8000
''')
    gw = e2e.start_gateway(cfg)
    procs.append(gw)
    state = tmp_path / "state"
    store = FileStore(tmp_path / "cloud", fsync=False)
    job = SyncJob(state / "buffer.db", store, "test-pump", state_dir=state)

    def heartbeat() -> dict:
        job.run_once()
        return json.loads(store.get("status/test-pump.json"))["gateway"]

    alive = heartbeat()
    assert alive["state"] == "answering" and alive["pid"] == gw.p.pid
    assert alive["fast_path_idle_s"] < 5.0 and alive["tripped"] is False

    os.kill(gw.p.pid, signal.SIGSTOP)
    try:
        hung = heartbeat()
    finally:
        os.kill(gw.p.pid, signal.SIGCONT)
    assert hung["state"] == "not answering" and hung["process"] == "stopped"
    assert hung["pid"] == gw.p.pid and "does not answer" in hung["error"]

    assert heartbeat()["state"] == "answering"  # running again
    gw.p.kill()  # gone without cleaning up: gateway.json stays behind
    gw.p.wait(10)
    gone = heartbeat()
    assert gone == {"state": "not running", "pid": gw.p.pid, "process": "gone"}
