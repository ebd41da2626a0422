"""Table features and table reading on the edge: the numbers a table bundle is fitted on
are the numbers `sensorml score` and a gateway rebuild, and a bad table is one clear line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sensorml.errors import ConfigError
from sensorml.offline.tablefeatures import (
    FEATURE_CODE_VERSION,
    TableFeaturizer,
    TableSpec,
    fill_missing,
    table_features,
)
from sensorml.offline.tableio import read_table


def reference(v: np.ndarray, spec: TableSpec) -> np.ndarray:
    """Row by row with numpy's own std and polyfit: the definition, written plainly."""
    n = len(v)
    out = np.full((n, len(spec.names())), np.nan)
    for i in range(spec.warmup(), n):
        row = []
        for j in range(v.shape[1]):
            if spec.include_values:
                row.append(v[i, j])
            row += [v[i - L, j] for L in spec.lags]
            if spec.rolling:
                w = v[i - spec.rolling + 1:i + 1, j]
                stats = {"mean": w.mean(), "std": w.std(),
                         "slope": np.polyfit(np.arange(len(w)), w, 1)[0]}
                row += [stats[s] for s in spec.rolling_stats]
        out[i] = row
    return out


def test_features_match_the_plain_definition_and_name_every_column():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(60, 3)).cumsum(axis=0) * [1.0, 10.0, 0.1] + [0, 100, -5]
    spec = TableSpec(columns=("a", "b", "c"), lags=(1, 3), rolling=5)
    X, ok = table_features(v, spec)
    assert spec.names()[:7] == ("a", "a.lag1", "a.lag3", "a.mean5", "a.std5", "a.slope5", "b")
    assert X.shape == (60, 18) and X.dtype == np.float32
    assert not ok[:4].any() and ok[4:].all() and spec.warmup() == 4
    np.testing.assert_allclose(X[4:], reference(v, spec)[4:], rtol=1e-5, atol=1e-4)
    assert np.isnan(X[:4]).any(axis=1).all()


def test_a_row_never_sees_the_future():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(40, 2))
    spec = TableSpec(columns=("a", "b"), lags=(2,), rolling=4, rolling_stats=("std", "slope"))
    X1, _ = table_features(v, spec)
    v2 = v.copy()
    v2[25:] += 100.0
    X2, _ = table_features(v2, spec)
    np.testing.assert_array_equal(X1[:25], X2[:25])
    assert not np.allclose(X1[25:], X2[25:])


def test_a_missing_value_invalidates_only_the_rows_whose_history_holds_it():
    v = np.arange(30.0).reshape(15, 2)
    v[7, 1] = np.nan
    X, ok = table_features(v, TableSpec(columns=("a", "b"), rolling=3))
    assert ok.tolist() == [False, False] + [True] * 5 + [False] * 3 + [True] * 5


def test_streaming_featurizer_gives_the_offline_numbers_row_by_row():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(50, 2))
    v[[10, 11, 30], [0, 0, 1]] = np.nan
    spec = TableSpec(columns=("a", "b"), lags=(1,), rolling=6, nan="fill",
                     fill_values={"a": 0.5, "b": -0.5})
    filled, n = fill_missing(v, spec)
    assert n == 3 and filled[10, 0] == filled[11, 0] == v[9, 0] and filled[30, 1] == v[29, 1]
    X, ok = table_features(filled, spec)
    f = TableFeaturizer(spec)
    for i in range(len(v)):
        got = f.push(v[i])
        if ok[i]:
            np.testing.assert_array_equal(got, X[i])
        else:
            assert got is None


def test_fill_uses_the_training_median_where_nothing_came_before():
    v = np.array([[np.nan, 1.0], [np.nan, 2.0], [4.0, np.nan]])
    out, n = fill_missing(v, TableSpec(columns=("a", "b"), nan="fill", fill_values={"a": 9.0}))
    assert n == 3 and out.tolist() == [[9.0, 1.0], [9.0, 2.0], [4.0, 2.0]]


def test_spec_round_trips_and_refuses_another_feature_version_or_kind():
    spec = TableSpec(columns=("t1", "p"), lags=(2, 1), rolling=10, nan="fill",
                     time_column="time", fill_values={"t1": 1.5, "p": 2})
    d = spec.to_dict()
    assert d["kind"] == "table" and d["feature_code_version"] == FEATURE_CODE_VERSION
    assert d["lags"] == [1, 2] and d["names"] == list(spec.names())
    assert TableSpec.from_dict(d) == spec
    with pytest.raises(ConfigError, match="feature_code_version: 'table-0'"):
        TableSpec.from_dict({**d, "feature_code_version": "table-0"})
    with pytest.raises(ConfigError, match="not fitted on a table"):
        TableSpec.from_dict({"channels": ["ax"], "sample_rate": 1000, "window": 8})
    with pytest.raises(ConfigError, match="rolling"):
        TableSpec(columns=("a",), rolling=1)


def test_tables_with_any_delimiter_and_iso_times(tmp_path):
    for delim in (",", ";", "\t", "|"):
        p = tmp_path / "run.csv"
        p.write_text(delim.join(["t", "a", "b"]) + "\n" + "".join(
            delim.join([f"2024-03-01T10:00:{i:02d}Z", str(i), str(2 * i)]) + "\n"
            for i in range(5)))
        tab = read_table(p, time_column="t")
        assert tab.columns == ("a", "b") and tab.values[:, 1].tolist() == [0, 2, 4, 6, 8]
        assert np.diff(tab.t).tolist() == [1.0] * 4 and tab.time_kind == "timestamp"
        assert tab.t_text[0] == "2024-03-01T10:00:00Z"


def test_table_errors_name_the_file_column_and_row(tmp_path):
    p = tmp_path / "run.csv"
    p.write_text("t,a,b\n" + "".join(f"{i},{i},{i}\n" for i in range(17)) + "17,1,abc\n")
    with pytest.raises(ConfigError) as e:
        read_table(p, time_column="t", columns=["a", "b", "c"])
    assert str(e.value) == "run.csv: column 'c' not found (columns: a, b, t)"
    with pytest.raises(ConfigError) as e:
        read_table(p, time_column="t")
    assert str(e.value) == "run.csv: column 'b' row 17: 'abc' is not a number"
    p.write_text("t,a\n2,1\n1,1\n")
    with pytest.raises(ConfigError, match="goes backwards at row 1"):
        read_table(p, time_column="t")
    p.write_text("t,a\n1,1,5\n")
    with pytest.raises(ConfigError, match="row 0 has 3 cells but the header has 2"):
        read_table(p, time_column="t")


def test_parquet_tables_with_timestamps(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    t = pa.array(np.arange(4, dtype="int64") * 1_000_000 + 1_700_000_000_000_000, pa.timestamp("us"))
    pq.write_table(pa.table({"ts": t, "a": [1.0, 2.0, None, 4.0], "n": [1, 2, 3, 4],
                             "s": ["x", "y", "z", "w"]}), tmp_path / "run.parquet")
    tab = read_table(tmp_path / "run.parquet", time_column="ts", numeric_only=True)
    assert tab.columns == ("a", "n") and np.isnan(tab.values[2, 0])
    assert tab.t.tolist() == [1_700_000_000.0 + i for i in range(4)]
    with pytest.raises(ConfigError, match="column 's' row 0: 'x' is not a number"):
        read_table(tmp_path / "run.parquet", time_column="ts", columns=["a", "s"])


def test_the_edge_modules_import_no_training_libraries():
    code = ("import sys, sensorml.offline.score, sensorml.offline.tablefeatures, sensorml.offline.tableio\n"
            "bad = [m for m in ('sklearn', 'scipy', 'pandas', 'skl2onnx', 'pyarrow', 'training')"
            " if m in sys.modules]\n"
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
