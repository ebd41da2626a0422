"""The training CLI on real files: fit a table, evaluate, update and re-sign, publish, export;
a user's mistake is one line and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sensorml.bundles.bundle import load_bundle
from sensorml.bundles.signing import keygen
from sensorml.offline.tablefeatures import FEATURE_CODE_VERSION
from training.cli import main

ROOT = Path(__file__).resolve().parents[2]


def make_run(path: Path, n: int = 500, fault_at: int = 300, delimiter: str = ",") -> Path:
    """Three correlated process values, 1 row/s; from *fault_at* ``b`` starts to oscillate
    (a change in dynamics, not in level) and drifts off its relation with ``a``."""
    rng = np.random.default_rng(3)
    load = np.convolve(rng.normal(size=n + 20), np.ones(20) / 20, "valid")[:n]
    a = 50 + 5 * load + 0.1 * rng.normal(size=n)
    b = 12 + 2 * load + 0.05 * rng.normal(size=n)
    c = 3.9 - 0.3 * load + 0.01 * rng.normal(size=n)
    i = np.arange(n)
    b[fault_at:] += 2.0 * np.sin(i[fault_at:] * 1.3) + 0.004 * (i[fault_at:] - fault_at)
    with open(path, "w") as f:
        f.write(delimiter.join(["t", "a", "b", "c"]) + "\n")
        for k in range(n):
            f.write(delimiter.join([f"{1.7e9 + k:.0f}", f"{a[k]:.5f}", f"{b[k]:.5f}",
                                    f"{c[k]:.5f}"]) + "\n")
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    priv, pub = keygen(d / "keys")
    make_run(d / "run.csv")
    return d, str(priv), str(pub)


def fit_args(d: Path, priv: str, *extra: str, out: str = "bundle") -> list[str]:
    return ["--quiet", "fit", "--table", str(d / "run.csv"), "--time-column", "t", "--columns",
            "a,b,c", "--out", str(d / out), "--key", priv, "--name", "pump", "--version", "1",
            *extra]


def test_fit_a_table_then_evaluate_update_publish_export(work, capsys):
    d, priv, pub = work
    assert main(fit_args(d, priv, "--healthy-rows", "0:300", "--rolling", "8", "--lags", "1",
                         "--model", "pca")) == 0
    assert "15 features" in capsys.readouterr().out  # 3 columns × (value, lag1, 3 stats)
    b = load_bundle(d / "bundle", trusted_keys=[pub])
    fs = b.manifest.feature_spec
    assert fs["kind"] == "table" and fs["columns"] == ["a", "b", "c"] and fs["rolling"] == 8
    assert fs["lags"] == [1] and fs["feature_code_version"] == FEATURE_CODE_VERSION
    assert fs["time_column"] == "t" and b.manifest.n_features == 15
    assert b.manifest.training["rows"] == 293  # 300 healthy rows minus 7 of warm-up

    assert main(["--quiet", "evaluate", "--bundle", str(d / "bundle"), "--key", priv,
                 "--table", str(d / "run.csv"), "--fault-rows", "300:", "--out",
                 str(d / "report"), "--update-bundle"]) == 0
    out = capsys.readouterr().out
    assert "493 of 500 rows scored, 200 in faults" in out and "updated" in out
    ev = load_bundle(d / "bundle", trusted_keys=[pub]).manifest.metrics["evaluation"]
    assert ev["labels"] == "rows 300:" and ev["trip"]["detected"] == 1
    assert ev["trip"]["recall"] > 0.8 and ev["warn"]["false_alarm_rate"] < 0.05
    assert ev["trip"]["mean_delay_s"] < 20
    ej = json.loads((d / "report" / "evaluation.json").read_text())
    assert ej["levels"]["trip"]["event"]["events"] == 1
    assert (d / "report" / "report.html").is_file()

    assert main(["--quiet", "publish", str(d / "bundle"), "--store", f"file://{d / 'store'}",
                 "--key", priv]) == 0
    rel = (d / "store" / "models" / "pump" / "1" / "RELEASE.md").read_text()
    assert "## Evaluation on run.csv (labels: rows 300:)" in rel
    assert main(["--quiet", "publish", str(d / "bundle"), "--store", str(d / "store"),
                 "--key", priv]) == 2
    assert "already published" in capsys.readouterr().err
    assert main(["export", str(d / "bundle"), "--out", str(d / "b.tar.gz"), "--trusted", pub]) == 0
    assert load_bundle(d / "b.tar.gz", trusted_keys=[pub]).manifest.metrics["evaluation"] == ev


def test_healthy_time_span_with_iso_bounds_and_fill_policy(work, tmp_path, capsys):
    d, priv, pub = work
    lines = (d / "run.csv").read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ","  # c missing in data row 4
    (tmp_path / "run.csv").write_text("\n".join(lines) + "\n")
    args = fit_args(tmp_path, priv, "--healthy-time",
                    "2023-11-14T22:13:20Z..2023-11-14T22:18:20Z", "--nan", "fill")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "filled 1 missing value(s)" in err and "300 healthy rows" in err
    fs = load_bundle(tmp_path / "bundle", trusted_keys=[pub]).manifest.feature_spec
    assert fs["nan"] == "fill" and set(fs["fill_values"]) == {"a", "b", "c"}


@pytest.mark.parametrize("extra, table, message", [
    (["--columns", "a,b,x"], None,
     "training fit: error: run.csv: column 'x' not found (columns: a, b, c, t)"),
    ([], "t,a,b,c\n" + "".join(f"{i},1,{i % 3},2\n" for i in range(17)) + "17,1,abc,2\n",
     "training fit: error: run.csv: column 'b' row 17: 'abc' is not a number"),
    ([], "t,a,b,c\n" + "".join(f"{i},1,{'' if i == 40 else i},2\n" for i in range(99)),
     "training fit: error: run.csv: column 'b' has 1 missing value(s), first at row 40 (1 in all); "
     "use --nan fill to forward-fill them, or clean the table"),
    (["--healthy-rows", "0:10", "--model", "iforest"], None,
     "training fit: error: --healthy-rows 0:10 gives 10 rows; iforest needs at least 50"),
    (["--healthy-time", "5..1"], None, "training fit: error: --healthy-time: '5..1' ends before it starts"),
])
def test_user_mistakes_are_one_line_exit_2(work, tmp_path, capsys, extra, table, message):
    d, priv, _ = work
    if table is None:
        (tmp_path / "run.csv").write_text((d / "run.csv").read_text())
    else:
        (tmp_path / "run.csv").write_text(table)
    args = fit_args(tmp_path, priv, *extra)
    if "--columns" in extra:
        i = args.index("--columns")
        del args[i:i + 2]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == message + "\n"
    assert not (tmp_path / "bundle").exists()


def test_other_commands_refuse_clearly(work, capsys):
    d, priv, pub = work
    assert main(["evaluate", "--bundle", str(d / "bundle"), "--trusted", pub, "--table",
                 str(d / "run.csv"), "--update-bundle"]) == 2
    assert capsys.readouterr().err == \
        "training evaluate: error: --update-bundle: needs --key to re-sign the bundle\n"
    assert main(["publish", str(d / "bundle"), "--store", str(d / "s2")]) == 2
    assert "--trusted or --key" in capsys.readouterr().err
    assert main(["evaluate", "--bundle", str(d / "bundle"), "--trusted", pub, "--table",
                 str(d / "run.csv")]) == 2
    assert "give --fault-rows, --fault-time or --labels" in capsys.readouterr().err


def test_a_real_process_fits_from_a_semicolon_table(work, tmp_path):
    d, priv, pub = work
    make_run(tmp_path / "run.csv", delimiter=";")
    r = subprocess.run([sys.executable, "-m", "training.cli", *fit_args(
        tmp_path, priv, "--healthy-rows", "0:300", "--model", "pca")[1:]],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "fitting pca on 300 rows" in r.stderr and "signed" in r.stdout
    assert load_bundle(tmp_path / "bundle", trusted_keys=[pub]).manifest.feature_spec["columns"] \
        == ["a", "b", "c"]
    r = subprocess.run([sys.executable, "-m", "training.cli", *fit_args(
        tmp_path, priv, "--healthy-rows", "0:10")[1:]],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1].endswith("needs at least 50")


def test_fit_and_evaluate_from_a_gateway_buffer_with_operator_labels(work, tmp_path, capsys):
    from sensorml.buffer.db import Buffer
    from sensorml.buffer.queries import BufferQueries

    d, priv, pub = work
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 4)).astype("<f4")
    X[200:, 1] += 6.0  # a fault from t = 1200 s
    db = tmp_path / "buffer.db"
    with Buffer(db, device="pump-7") as b:
        b.write(scores=[(1000.0 + i, i, 0.0, 0, "1", X[i].tobytes()) for i in range(300)])
        alarm = b.add_event("alarm", {"score": 3.0}, t=1203.0)
        b.add_event("reset", {"by": "ana"}, t=1300.0)
    with BufferQueries.open(db) as q:
        q.add_label(alarm, "true_fault", "bearing", "ana")
    (tmp_path / "spec.json").write_text(json.dumps({"names": ["x.rms", "x.peak", "y.rms", "y.peak"]}))
    assert main(["--quiet", "fit", "--buffer", str(db), "--spec", str(tmp_path / "spec.json"),
                 "--healthy-time", "1000..1200", "--model", "pca", "--out", str(tmp_path / "b"),
                 "--key", priv,
                 "--name", "pump", "--version", "2"]) == 0
    m = load_bundle(tmp_path / "b", trusted_keys=[pub]).manifest
    assert m.training["rows"] == 200 and list(m.feature_names) == ["x.rms", "x.peak", "y.rms", "y.peak"]
    capsys.readouterr()
    assert main(["--quiet", "evaluate", "--bundle", str(tmp_path / "b"), "--trusted", pub,
                 "--buffer", str(db)]) == 0
    out = capsys.readouterr().out
    assert "faults: 1 operator label(s) in the buffer" in out
    assert "300 of 300 rows scored, 97 in faults" in out and "events 1/1" in out
    # the same faults as a labels file, in times and in rows
    (tmp_path / "labels.csv").write_text("start,end,label\n1203,1300,bearing\n")
    (tmp_path / "rows.csv").write_text("start_row,end_row\n203,300\n")
    for f in ("labels.csv", "rows.csv"):
        assert main(["--quiet", "evaluate", "--bundle", str(tmp_path / "b"), "--trusted", pub,
                     "--buffer", str(db), "--labels", str(tmp_path / f)]) == 0
        assert "300 of 300 rows scored, 97 in faults" in capsys.readouterr().out


def test_parquet_table_with_timestamps_fits_and_evaluates_by_time_span(work, tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    d, priv, pub = work
    src = np.genfromtxt(d / "run.csv", delimiter=",", names=True)
    ts = pa.array((src["t"] * 1e6).astype("int64"), pa.timestamp("us", "UTC"))
    pq.write_table(pa.table({"when": ts, "a": src["a"], "b": src["b"], "c": src["c"]}),
                   tmp_path / "run.parquet")
    assert main(["--quiet", "fit", "--table", str(tmp_path / "run.parquet"), "--time-column",
                 "when", "--healthy-rows", "0:300", "--rolling", "8", "--model", "pca",
                 "--out", str(tmp_path / "b"), "--key", priv, "--name", "p", "--version", "1"]) == 0
    capsys.readouterr()
    # 1.7e9 + 300 s = 2023-11-14T22:18:20Z: the same fault as rows 300:
    assert main(["--quiet", "evaluate", "--bundle", str(tmp_path / "b"), "--trusted", pub,
                 "--table", str(tmp_path / "run.parquet"),
                 "--fault-time", "2023-11-14T22:18:20Z.."]) == 0
    out = capsys.readouterr().out
    assert "493 of 500 rows scored, 200 in faults" in out and "events 1/1" in out


def test_name_and_version_default_to_the_file_and_the_time(work, tmp_path):
    d, priv, pub = work
    args = fit_args(d, priv, "--healthy-rows", "0:300", out=str(tmp_path / "b"))
    for opt in ("--name", "--version"):
        i = args.index(opt)
        del args[i:i + 2]
    assert main(args) == 0
    m = load_bundle(tmp_path / "b", trusted_keys=[pub]).manifest
    assert m.name == "run" and len(m.version) == 14 and m.version.isdigit()


def test_spec_from_a_bundle_folder_or_archive(work, tmp_path, capsys):
    """``fit --feature-table F.csv --spec BUNDLE``: the features a bundle's model was
    scored on, refitted with that bundle's feature spec (folder or .tar.gz)."""
    d, priv, pub = work
    src = tmp_path / "src"
    assert main(fit_args(d, priv, "--healthy-rows", "0:300", "--rolling", "4",
                         out=str(src))) == 0
    assert main(["export", str(src), "--out", str(tmp_path / "src.tar.gz"), "--trusted", pub]) == 0
    m = load_bundle(src, trusted_keys=[pub]).manifest
    rng = np.random.default_rng(1)
    table = tmp_path / "features.csv"
    table.write_text(",".join(m.feature_names) + "\n" + "".join(
        ",".join(f"{v:.5f}" for v in row) + "\n" for row in rng.normal(size=(120, m.n_features))))
    for spec in (src, tmp_path / "src.tar.gz"):
        out = tmp_path / f"refit-{spec.name}"
        assert main(["--quiet", "fit", "--feature-table", str(table), "--spec", str(spec),
                     "--model", "pca", "--out", str(out), "--key", priv, "--name", "pump",
                     "--version", "2"]) == 0
        fs = load_bundle(out, trusted_keys=[pub]).manifest.feature_spec
        assert fs["kind"] == "table" and fs["columns"] == ["a", "b", "c"] and fs["rolling"] == 4
        assert fs["names"] == list(m.feature_names)
    capsys.readouterr()
    table.write_text("x,y\n" + "1,2\n" * 60)
    assert main(["--quiet", "fit", "--feature-table", str(table), "--spec", str(src), "--out",
                 str(tmp_path / "no"), "--key", priv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"training fit: error: --spec: {src} names {m.n_features} features")
    assert err.endswith(f"{table} has columns x, y\n") and err.count("\n") == 1


def test_sensorml_train_is_the_training_command(work, tmp_path, capsys):
    from sensorml.cli import main as sensorml_main

    d, priv, pub = work
    assert sensorml_main(["train", *fit_args(d, priv, "--healthy-rows", "0:300",
                                             out=str(tmp_path / "b"))]) == 0
    assert "signed" in capsys.readouterr().out
    assert sensorml_main(["train", "verify", str(tmp_path / "b"), "--trusted", pub]) == 0
    assert capsys.readouterr().out.startswith(f"ok {tmp_path / 'b'}: pump 1 (pca")
    assert sensorml_main(["train", "fit", "--features", str(tmp_path / "none.npz"), "--out",
                          str(tmp_path / "c"), "--unsigned"]) == 2
    assert capsys.readouterr().err.startswith("sensorml train fit: error: ")
