"""The soak benchmark, ``python -m benchmarks.soak`` (``make soak``), run as ``make soak``
runs it but for 20 seconds: simulator at 3 x 25.6 kHz + gateway + ``sensorml sync`` every
5 s, a fault every 6 s, trip, reset.

This tests the benchmark: that its entry point runs end to end and that the figures it
reports hold together (every injected fault counted as a trip, drop counters, latency
quantiles from both halves), so the hour-long run cannot rot between uses. It goes
through the product at its full rate on the way, but the product's own behaviour under
faults is asserted by the other files here (links, power cuts, disk, bad input).
The suite imports nothing from ``benchmarks``: the runner is a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def test_short_soak_has_no_drops_and_trips_on_the_fault(tmp_path, fault_report):
    out = tmp_path / "soak.json"
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--seconds", "20", "--fault-every", "6",
         "--sync-every", "5", "--rss-every", "1", "--workdir", str(tmp_path / "soak"),
         "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stderr[-2000:]
    f = json.loads(out.read_text())
    fault_report.add("soak_short", **f)
    assert f["gateway_exit"] == 0
    assert f["faults_injected"] >= 1 and f["trips"] == f["faults_injected"]
    assert all(x["reset_ok"] for x in f["faults"])
    assert sum(f["recorder_dropped"].values()) == 0
    assert sum(f["recorder_store_dropped"].values()) == 0
    assert f["source_missed_frames"] == 0 and f["queue_drops"] in (0, None)
    assert f["windows"] > 20 * 25600 / 512 * 0.8  # kept up with the real rate
    assert f["window_latency_p99_ms"]["first"] is not None
    assert f["window_latency_p99_ms"]["last"] is not None
    if f["sync"]:
        assert f["lake_files"] > 0
