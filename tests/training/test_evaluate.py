"""Evaluation figures on hand-made score/label arrays whose answers are counted by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from training.evaluate import (
    evaluate_levels,
    eventwise,
    jsonable,
    manifest_metrics,
    pointwise,
    runs,
)
from training.report import write_report


def b(text: str) -> np.ndarray:
    return np.array([c == "1" for c in text])


def test_pointwise_counts_and_rates():
    truth = b("0000011111")
    alarm = b("0100001111")
    p = pointwise(alarm, truth)
    assert (p["tp"], p["fp"], p["fn"], p["tn"]) == (4, 1, 1, 4)
    assert p["precision"] == pytest.approx(0.8) and p["recall"] == pytest.approx(0.8)
    assert p["f1"] == pytest.approx(0.8)
    assert p["false_alarm_rate"] == pytest.approx(0.2) and p["missed_alarm_rate"] == pytest.approx(0.2)


def test_pointwise_leaves_out_unscored_rows_and_says_nan_when_undefined():
    truth, alarm = b("0011"), b("1011")
    p = pointwise(alarm, truth, scored=b("0111"))  # the false alarm is in warm-up
    assert (p["tp"], p["fp"], p["tn"]) == (2, 0, 1) and p["precision"] == 1.0
    q = pointwise(b("0000"), b("0000"))
    assert math.isnan(q["precision"]) and math.isnan(q["recall"]) and q["false_alarm_rate"] == 0


def test_runs():
    assert runs(b("0110111001")) == [(1, 3), (4, 7), (9, 10)]
    assert runs(b("")) == [] and runs(b("000")) == []


def test_eventwise_detection_delay_and_false_alarms_per_hour():
    # 2 s per row; faults at rows 4-7 (detected at row 6: 4 s late) and 12-13 (missed);
    # alarm episodes starting at rows 1 and 9 are false (two), the one at row 6 is true.
    t = np.arange(16) * 2.0
    truth = b("0000111100001100")
    alarm = b("0110001110100000")
    e = eventwise(alarm, truth, t)
    assert e["events"] == 2 and e["detected"] == 1 and e["detection_rate"] == 0.5
    assert e["delays_s"] == [4.0] and e["mean_delay_s"] == 4.0
    assert e["false_alarms"] == 2
    assert e["healthy_hours"] == pytest.approx(10 * 2.0 / 3600)
    assert e["false_alarms_per_hour"] == pytest.approx(2 / (20 / 3600))


def test_an_alarm_that_runs_on_into_a_fault_is_false_at_its_start():
    e = eventwise(b("0011110"), b("0000111"), np.arange(7.0))
    assert e["false_alarms"] == 1 and e["detected"] == 1 and e["delays_s"] == [0.0]


def test_levels_use_the_decided_verdicts_cumulatively_and_raw_scores_apart():
    verdict = ["warmup", "normal", "warn", "normal", "alarm", "trip", "trip", "normal"]
    score = np.array([np.nan, 0.1, 0.6, 0.2, 0.75, 0.9, 0.95, 0.1])
    truth = b("00001110")
    ev = evaluate_levels(score, verdict, truth, np.arange(8.0),
                         {"warn": 0.5, "alarm": 0.7, "trip": 0.8})
    assert ev["scored_rows"] == 7 and ev["fault_rows"] == 3
    warn, trip = ev["levels"]["warn"], ev["levels"]["trip"]
    assert (warn["point"]["tp"], warn["point"]["fp"]) == (3, 1)
    assert (trip["point"]["tp"], trip["point"]["fn"]) == (2, 1)
    assert warn["event"]["delays_s"] == [0.0] and trip["event"]["delays_s"] == [1.0]
    assert ev["raw"]["alarm"]["point"]["tp"] == 3 and ev["raw"]["alarm"]["point"]["fp"] == 0
    m = manifest_metrics(ev, data="run.csv", labels="rows 4:7")
    assert m["trip"]["recall"] == pytest.approx(2 / 3) and m["warn"]["false_alarms"] == 1
    json.dumps(m, allow_nan=False)  # strict JSON for the manifest


def test_jsonable_makes_strict_json():
    assert jsonable({"x": (np.float64(np.inf), 1)}) == {"x": [None, 1]}


def test_report_writes_json_html_and_an_embedded_plot(tmp_path):
    pytest.importorskip("matplotlib")
    t = np.arange(100.0)
    score = np.where(t >= 60, 1.0, 0.1) + 0.01 * np.sin(t)
    verdict = ["normal" if s < 0.5 else "trip" for s in score]
    ev = evaluate_levels(score, verdict, t >= 60, t, {"warn": 0.4, "alarm": 0.5, "trip": 0.6})
    files = write_report(tmp_path / "r", ev, t=t, score=score, faults=[(60.0, 100.0)], title="x")
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = files["html"].read_text()
    assert "data:image/png;base64," in page and "recall 100.0%" in page
    json.loads(files["json"].read_text(), parse_constant=lambda c: pytest.fail(c))
