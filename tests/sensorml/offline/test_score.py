"""`sensorml score`: a table bundle scores a plant table offline, row for row, with the
gateway's scorer and decider; a buffer's stored features are re-scored."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from sensorml.buffer.db import Buffer
from sensorml.bundles.bundle import load_bundle, write_bundle
from sensorml.bundles.signing import keygen
from sensorml.cli import main as sensorml_main
from sensorml.edge.decider import Decider, Thresholds
from sensorml.edge.scorer import Scorer
from sensorml.offline.tablefeatures import TableSpec, table_features
from sensorml.offline.tableio import read_table

FIXTURE = Path(__file__).resolve().parents[3] / "data" / "tables" / "pump_cavitation.csv"
COLUMNS = "temperature_c,current_a,pressure_bar"
FAULT_ROW = 400  # see data/tables/make_tables.py


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A table bundle fitted on the fixture's healthy rows 0:400 (rolling context 10)."""
    from training.cli import main as training_main

    d = tmp_path_factory.mktemp("score")
    priv, pub = keygen(d / "keys")
    shutil.copy(FIXTURE, d / "run.csv")
    assert training_main(["--quiet", "fit", "--table", str(d / "run.csv"), "--time-column", "t",
                          "--columns", COLUMNS, "--healthy-rows", "0:400", "--rolling", "10",
                          "--lags", "1", "--model", "pca", "--out", str(d / "bundle"), "--key", str(priv),
                          "--name", "pump-table", "--version", "1"]) == 0
    return d, priv, pub


def read_scores(p: Path) -> list[dict]:
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def test_score_writes_one_row_per_input_row_and_flags_the_fault(fitted, capsys):
    d, _, pub = fitted
    out = d / "scores.csv"
    assert sensorml_main(["score", "--bundle", str(d / "bundle"), "--table", str(d / "run.csv"),
                          "--out", str(out), "--trusted", str(pub)]) == 0
    assert "scored 600 rows of run.csv with pump-table 1" in capsys.readouterr().err
    rows = read_scores(out)
    src = read_table(d / "run.csv", time_column="t")
    assert len(rows) == len(src) == 600 and list(rows[0]) == ["time", "score", "verdict"]
    assert [r["time"] for r in rows] == list(src.t_text)
    assert all(r["score"] == "" and r["verdict"] == "warmup" for r in rows[:9])
    assert all(r["score"] != "" for r in rows[9:])
    s = np.array([float(r["score"]) for r in rows[9:]])
    healthy, faulty = s[:FAULT_ROW - 9], s[FAULT_ROW - 9 + 30:]  # after the 20 s ramp (+10)
    assert np.median(faulty) > np.quantile(healthy, 0.95)
    verdicts = [r["verdict"] for r in rows]
    assert "trip" in verdicts[FAULT_ROW:FAULT_ROW + 60]
    after = verdicts[FAULT_ROW + 30:]
    assert after.count("normal") < 0.2 * len(after)
    assert verdicts[:FAULT_ROW].count("normal") >= 0.9 * (FAULT_ROW - 9)


def test_scores_are_the_gateways_scores_for_the_same_features(fitted):
    """Recomputes with the pieces the gateway uses: tablefeatures, Scorer.score, Decider."""
    from sensorml.offline.score import score_table

    d, _, pub = fitted
    b = load_bundle(d / "bundle", trusted_keys=[pub])
    table, r = score_table(b, d / "run.csv")
    spec = TableSpec.from_dict(b.manifest.feature_spec)
    X, ok = table_features(table.values[:, [table.columns.index(c) for c in spec.columns]], spec)
    sc = Scorer(b)
    dec = Decider(Thresholds(**b.manifest.thresholds), k=3, n=5, hysteresis=0.1)
    for i in np.flatnonzero(ok)[::7]:
        assert r.score[i] == pytest.approx(sc.score(X[i]), rel=1e-6, abs=1e-6)  # batch vs one row
    want = [dec.update(sc.score(X[i])).verdict.label for i in np.flatnonzero(ok)]
    assert [v for v, o in zip(r.verdict, ok) if o] == want


def test_missing_values_are_reported_per_row_not_scored(fitted, tmp_path):
    d, _, pub = fitted
    lines = (d / "run.csv").read_text().splitlines()
    cells = lines[101].split(",")
    cells[3] = ""  # pressure_bar of data row 100
    lines[101] = ",".join(cells)
    (tmp_path / "gap.csv").write_text("\n".join(lines) + "\n")
    assert sensorml_main(["score", "--bundle", str(d / "bundle"), "--table",
                          str(tmp_path / "gap.csv"), "--out", str(tmp_path / "s.csv"),
                          "--trusted", str(pub)]) == 0
    v = [r["verdict"] for r in read_scores(tmp_path / "s.csv")]
    assert v[100:110] == ["missing"] * 10 and v[110] != "missing" and v[99] != "missing"


def test_score_re_scores_a_buffers_features(fitted, tmp_path):
    d, _, pub = fitted
    b = load_bundle(d / "bundle", trusted_keys=[pub])
    n = b.manifest.n_features
    rng = np.random.default_rng(0)
    with Buffer(tmp_path / "buffer.db") as buf:
        buf.write(scores=[(1000.0 + i, i, 0.5, 1, "0", rng.normal(size=n).astype("<f4").tobytes())
                          for i in range(20)] + [(2000.0, 99, 0.1, 0, "0", None)])
    out = tmp_path / "s.csv"
    assert sensorml_main(["score", "--bundle", str(d / "bundle"), "--buffer",
                          str(tmp_path / "buffer.db"), "--out", str(out),
                          "--trusted", str(pub)]) == 0
    rows = read_scores(out)
    assert len(rows) == 20 and rows[0]["recorded_verdict"] == "warn"
    assert rows[0]["recorded_score"] == "0.5" and rows[0]["recorded_model"] == "0"
    assert all(r["score"] != "" for r in rows)


def test_user_mistakes_are_one_line_exit_2(fitted, tmp_path, capsys):
    d, priv, pub = fitted
    args = ["score", "--bundle", str(d / "bundle"), "--table", str(d / "run.csv"),
            "--out", str(tmp_path / "s.csv")]
    assert sensorml_main(args) == 2
    assert "--trusted" in capsys.readouterr().err
    other_priv, other_pub = keygen(tmp_path / "other")
    assert sensorml_main([*args, "--trusted", str(other_pub)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    (tmp_path / "nocol.csv").write_text("t,temperature_c,current_a\n1,2,3\n")
    assert sensorml_main(["score", "--bundle", str(d / "bundle"), "--table",
                          str(tmp_path / "nocol.csv"), "--out", str(tmp_path / "s.csv"),
                          "--trusted", str(pub)]) == 2
    err = capsys.readouterr().err
    assert err == ("sensorml score: error: nocol.csv: column 'pressure_bar' not found "
                   "(columns: current_a, t, temperature_c)\n")
    # a sensor-window bundle cannot score table rows
    m = load_bundle(d / "bundle", trusted_keys=[pub]).manifest.to_dict()
    m["feature_spec"] = {"names": m["feature_names"]}
    write_bundle(tmp_path / "win", m, (d / "bundle" / "model.onnx").read_bytes(), priv)
    assert sensorml_main(["score", "--bundle", str(tmp_path / "win"), "--table",
                          str(d / "run.csv"), "--out", str(tmp_path / "s.csv"),
                          "--trusted", str(pub)]) == 2
    assert "scores sensor windows, not table rows" in capsys.readouterr().err
