"""Loaders behind one interface: plant tables and a gateway's buffer file (real SQLite)."""

from __future__ import annotations

import numpy as np
import pytest

from sensorml.buffer.db import Buffer
from sensorml.buffer.queries import BufferQueries
from sensorml.errors import ConfigError, StoreError
from training.data import (
    BufferSource,
    DataSource,
    FaultRange,
    TableSource,
    healthy_table,
    parse_row_ranges,
    parse_time_ranges,
    ranges_mask,
    rows_mask,
)


def write_table(path, n=200, nan_at=(), delimiter=","):
    rng = np.random.default_rng(0)
    lines = [delimiter.join(["t", "a", "b", "note"])]
    for i in range(n):
        a, b = rng.normal(), 10 + rng.normal()
        cells = [f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}", f"{a:.4f}", f"{b:.4f}", "ok"]
        for r, c in nan_at:
            if r == i:
                cells[c] = ""
        lines.append(delimiter.join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_table_source_builds_the_edge_features_and_skips_text_columns(tmp_path):
    src = TableSource(write_table(tmp_path / "run.csv", delimiter=";"), time_column="t",
                      lags=(1,), rolling=5)
    assert isinstance(src, DataSource)
    f = src.features()
    assert src.table.columns == ("a", "b")  # 'note' is text: left out when columns not chosen
    assert f.names == ("a", "a.lag1", "a.mean5", "a.std5", "a.slope5",
                       "b", "b.lag1", "b.mean5", "b.std5", "b.slope5")
    assert f.X.shape == (200, 10) and f.valid.sum() == 196 and f.feature_spec["kind"] == "table"
    assert f.feature_spec["time_column"] == "t" and f.t[1] - f.t[0] == 1.0
    part = src.features(since=f.t[100], until=f.t[150])
    assert len(part) == 50 and part.t[0] == f.t[100]
    assert src.labels() == []


def test_missing_values_reject_names_the_first_or_fill_reports_how_many(tmp_path):
    p = write_table(tmp_path / "run.csv", nan_at=[(17, 2), (30, 2), (31, 1)])
    with pytest.raises(ConfigError) as e:
        TableSource(p, time_column="t")
    assert str(e.value).startswith("run.csv: column 'a' has 1 missing value(s), first at row 31 "
                                   "(3 in all); use --nan fill")
    src = TableSource(p, time_column="t", nan="fill")
    assert src.filled == 3 and not np.isnan(src.values).any()
    assert src.values[17, 1] == src.values[16, 1]  # forward filled
    med = src.spec.fill_values
    assert set(med) == {"a", "b"} and 9 < med["b"] < 11  # training medians go to the bundle
    assert "3 missing value(s) filled" in src.features().notes[0]


def test_too_few_healthy_rows_for_the_model_is_one_clear_line(tmp_path):
    f = TableSource(write_table(tmp_path / "run.csv"), time_column="t").features()
    with pytest.raises(ConfigError) as e:
        healthy_table(f, rows_mask(parse_row_ranges("0:10", len(f)), len(f)), "iforest",
                      "--healthy-rows 0:10")
    assert str(e.value) == "--healthy-rows 0:10 gives 10 rows; iforest needs at least 50"
    g = TableSource(write_table(tmp_path / "run.csv"), time_column="t", rolling=8).features()
    with pytest.raises(ConfigError, match=r"gives 52 rows \(45 after 7 warm-up/missing rows\)"):
        healthy_table(g, rows_mask([(0, 52)], len(g)), "iforest", "--healthy-rows 0:52")
    t = healthy_table(g, rows_mask([(0, 100)], len(g)), "iforest", "x")
    assert t.X.shape == (93, 8) and np.isfinite(t.X).all() and t.feature_spec["rolling"] == 8


def test_row_and_time_ranges():
    assert parse_row_ranges("160:960", 1000) == [(160, 960)]
    assert parse_row_ranges(":10,-5:", 100) == [(0, 10), (95, 100)]
    for bad in ("10", "a:b", "50:10"):
        with pytest.raises(ConfigError, match="--healthy-rows"):
            parse_row_ranges(bad, 100)
    spans = parse_time_ranges("2024-01-01T00:00..2024-01-02T00:00")
    assert spans == [(1704067200.0, 1704153600.0)]
    with pytest.raises(ConfigError, match="ends before it starts"):
        parse_time_ranges("20..10")
    m = ranges_mask([FaultRange(2, 4), (7, np.inf)], np.arange(10.0))
    assert m.tolist() == [False, False, True, True, False, False, False, True, True, True]


@pytest.fixture
def buffer_file(tmp_path):
    """A gateway buffer: 30 scored windows (2 model versions), one without features,
    an alarm labelled true_fault then a reset, a warning labelled false_alarm."""
    p = tmp_path / "buffer.db"
    rng = np.random.default_rng(1)
    with Buffer(p, device="pump-7") as b:
        b.write(scores=[(100.0 + i, i, 0.1 * i, min(i // 10, 3), "1" if i < 15 else "2",
                         rng.normal(size=4).astype("<f4").tobytes()) for i in range(30)]
                + [(131.0, 31, 0.0, 0, "2", None)])
        warn = b.add_event("warn", {"score": 0.6}, t=105.0)
        alarm = b.add_event("alarm", {"score": 2.0}, t=120.0)
        b.add_event("reset", {"by": "ana"}, t=125.0)
    with BufferQueries.open(p) as q:
        q.add_label(alarm, "true_fault", "bearing noise", "ana")
        q.add_label(warn, "false_alarm", "", "ana")
    return p


def test_buffer_source_reads_features_verdicts_versions_and_labels(buffer_file):
    src = BufferSource(buffer_file, {"names": ["x.rms", "x.peak", "y.rms", "y.peak"]})
    assert isinstance(src, DataSource)
    f = src.features()
    assert f.X.shape == (30, 4) and f.X.dtype == np.float32 and f.names[1] == "x.peak"
    assert f.t[0] == 100.0 and f.verdict.tolist()[9:12] == [0, 1, 1]
    assert f.model_version[14:16] == ("1", "2") and f.score[3] == pytest.approx(0.3)
    assert "1 score rows without features" in f.notes[0]
    assert len(src.features(since=110.0, until=120.0)) == 10
    assert src.labels() == [FaultRange(120.0, 125.0, "alarm #2: bearing noise")]
    verdicts = {r.kind: r.verdict for r in src.label_rows()}
    assert verdicts == {"warn": "false_alarm", "alarm": "true_fault"}
    assert BufferSource(buffer_file).features().names == ("f0", "f1", "f2", "f3")


def test_buffer_is_read_only_and_readable_while_the_gateway_writes(buffer_file):
    with Buffer(buffer_file) as live:  # the gateway keeps it open and writes on
        live.write(scores=[(200.0, 99, 1.0, 0, "2", np.zeros(4, "<f4").tobytes())])
        assert len(BufferSource(buffer_file).features()) == 31
        live.write(scores=[(201.0, 100, 1.0, 0, "2", np.zeros(4, "<f4").tobytes())])
    assert len(BufferSource(buffer_file).features()) == 32
    buffer_file.chmod(0o444)  # a copy the user may only read
    try:
        assert len(BufferSource(buffer_file).features()) == 32
    finally:
        buffer_file.chmod(0o644)
    with pytest.raises(StoreError, match="missing.db: no buffer here"):
        BufferSource(buffer_file.parent / "missing.db").features()
    (buffer_file.parent / "junk.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError, match="junk.db: cannot open buffer"):
        BufferSource(buffer_file.parent / "junk.db").features()
