"""`make demo` runs `sensorml demo`: the whole loop (simulator, learn, train, publish,
sync, gateway, fault, trip, label, upload, retrain, shadow, promotion, report) with real
processes. Here in its quick form, as one real subprocess."""

import subprocess
import sys

import pytest


@pytest.mark.timeout(240)
def test_demo_runs_the_whole_loop(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sensorml.cli", "demo", "--quick", "--workdir",
                        str(tmp_path / "demo")], capture_output=True, text=True, timeout=230)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout
    for step in ("TRIP cause=model", "operator labels trip", "uploaded", "in shadow",
                 "promoted", "live model: demo-pump 2"):
        assert step in out, step
    report = (tmp_path / "demo" / "report.html").read_text()
    assert "sample-to-trip" in report and "<td>2</td>" in report
