"""The soak runner (``benchmarks.soak``, ``make soak``) for 20 seconds: simulator at
3 x 25.6 kHz + gateway (+ ``sensorml sync`` every 5 s when it exists), one injected fault,
trip, reset. Checks the runner end to end and the figures it reports; the hour-long run
is ``make soak``."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)


def test_short_soak_has_no_drops_and_trips_on_the_fault(tmp_path, fault_report):
    from benchmarks.soak import run

    res = run(20.0, fault_every_s=6.0, work=tmp_path / "soak", rss_every_s=1.0,
              sync_every_s=5.0)
    f = res.figures
    fault_report.add("soak_short", **res.to_dict())
    assert f["gateway_exit"] == 0
    assert f["faults_injected"] >= 1 and f["trips"] == f["faults_injected"]
    assert all(x["reset_ok"] for x in res.faults)
    assert sum(f["recorder_dropped"].values()) == 0
    assert sum(f["recorder_store_dropped"].values()) == 0
    assert f["source_missed_frames"] == 0 and f["queue_drops"] in (0, None)
    assert f["windows"] > 20 * 25600 / 512 * 0.8  # kept up with the real rate
    assert f["window_latency_p99_ms"]["first"] is not None
    assert f["window_latency_p99_ms"]["last"] is not None
    if res.sync:
        assert f["lake_files"] > 0
