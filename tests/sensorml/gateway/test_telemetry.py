"""The running gateway's ``/metrics`` carries the recorder's own families.

A real ``sensorml gateway`` process reads the in-process simulated pump (``sim://``),
scores with the session's signed bundle (real onnxruntime) and records every window's raw
samples into its SQLite buffer; the test scrapes its control port over HTTP on 127.0.0.1.
Nothing is faked.
"""

from __future__ import annotations

import json
import threading
import time
from urllib.request import urlopen

import pytest

pytestmark = pytest.mark.timeout(90)

LANES = ("events", "scores", "raw_alarm", "raw_sample")


def get(port: int, path: str) -> str:
    with urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def scrape(port: int) -> tuple[dict[str, str], dict[str, float]]:
    """(``{family: type}``, ``{'name{labels}': value}``) of one ``/metrics`` answer."""
    types, samples = {}, {}
    for line in get(port, "/metrics").splitlines():
        if line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name not in types, f"family {name} declared twice"
            types[name] = kind
        elif line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            assert series not in samples, f"series {series} twice"
            samples[series] = float(value)
    return types, samples


def wait_for(pred, timeout: float, what: str):
    """Poll ``pred`` (a read of the gateway over HTTP) until it is true; its value."""
    pause, deadline = threading.Event(), time.monotonic() + timeout
    while not (v := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        pause.wait(0.05)
    return v


def test_metrics_of_a_running_gateway_show_the_recorders_families(tmp_path, procs, bundle,
                                                                    keys, e2e):
    cfg = e2e.write_gateway_config(tmp_path, f'''
[source]
url = "sim://pump?rate=25600&seed=4"
[model]
bundle = "{bundle}"
trusted_keys = ["{keys[1]}"]
[buffer]
raw_sample_every = 1
''')
    gw = e2e.start_gateway(cfg)
    procs.append(gw)
    port = json.loads((tmp_path / "state" / "gateway.json").read_text())["port"]

    def written() -> dict | None:
        s = scrape(port)[1]
        return s if s['sensorml_recorder_written_total{lane="scores"}'] > 0 and \
            s['sensorml_recorder_written_total{lane="raw_sample"}'] > 0 else None

    wait_for(written, 30, "scores and raw windows committed to the buffer")
    before = json.loads(get(port, "/status"))["recorder"]
    types, s = scrape(port)
    for family, kind in (("sensorml_recorder_queued", "gauge"),
                         ("sensorml_recorder_written_total", "counter"),
                         ("sensorml_recorder_dropped_total", "counter"),
                         ("sensorml_recorder_store_dropped_total", "counter"),
                         ("sensorml_recorder_errors_total", "counter"),
                         ("sensorml_recorder_evicted_total", "counter"),
                         ("sensorml_recorder_buffer_bytes", "gauge"),
                         ("sensorml_recorder_last_commit_timestamp_seconds", "gauge")):
        assert types.get(family) == kind, (family, types.get(family))
    for lane in LANES:
        for family in ("queued", "written_total", "dropped_total", "store_dropped_total"):
            assert f'sensorml_recorder_{family}{{lane="{lane}"}}' in s, (family, lane)
        # counters read after /status: never below what it said
        assert s[f'sensorml_recorder_written_total{{lane="{lane}"}}'] >= before["written"][lane]
        assert s[f'sensorml_recorder_dropped_total{{lane="{lane}"}}'] >= before["dropped"][lane]
        assert s[f'sensorml_recorder_store_dropped_total{{lane="{lane}"}}'] >= \
            before["store_dropped"][lane]
    assert s['sensorml_recorder_evicted_total{table="raw_windows"}'] == 0  # far from the cap
    assert s["sensorml_recorder_errors_total"] == 0
    assert s["sensorml_recorder_buffer_bytes"] > 0
    assert abs(s["sensorml_recorder_last_commit_timestamp_seconds"] - time.time()) < 30
    # the gateway's own families are still there, beside the recorder's
    assert s["sensorml_windows_total"] > 0 and s["sensorml_tripped"] == 0
    assert s['sensorml_model_info{name="pump",version="1"}'] == 1
