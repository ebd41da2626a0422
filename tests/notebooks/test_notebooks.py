"""The notebooks run top to bottom in a real Jupyter kernel (nbclient + ipykernel).

Each notebook is executed from the repository's ``notebooks/`` folder with its figures
written to ``tmp_path`` (``SENSORML_NB_OUT``); the test checks that no cell failed and
that the outputs a reader relies on are there: figures, the key printed figures, and
the files the notebook says it made (bundle, buffer).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
KERNEL = "python3"


def _runs_this_python(argv: list[str]) -> bool:
    """jupyter_client swaps a bare ``python``/``python3`` for ``sys.executable``."""
    bare = {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    return bool(argv) and (argv[0] in bare or os.path.abspath(argv[0]) == os.path.abspath(
        sys.executable))


@pytest.fixture(scope="module")
def kernel_name():
    """``python3`` must start this interpreter (the venv's). If the spec jupyter_client
    finds runs another python (e.g. a user-level kernelspec), install ipykernel's spec into
    ``sys.prefix`` and put that first on ``JUPYTER_PATH`` for these tests."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    with pytest.MonkeyPatch.context() as mp:
        try:
            ok = _runs_this_python(KernelSpecManager().get_kernel_spec(KERNEL).argv)
        except NoSuchKernel:
            ok = False
        if not ok:
            from ipykernel.kernelspec import install

            install(prefix=sys.prefix, kernel_name=KERNEL)
            share = os.path.join(sys.prefix, "share", "jupyter")
            mp.setenv("JUPYTER_PATH", os.pathsep.join(
                p for p in (share, os.environ.get("JUPYTER_PATH", "")) if p))
            argv = KernelSpecManager().get_kernel_spec(KERNEL).argv
            assert _runs_this_python(argv), f"kernel {KERNEL!r} still runs {argv[0]}"
        yield KERNEL


def run(name: str, out: Path, kernel: str) -> tuple[dict, str]:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # the repository on the kernel's path too, installed (editable) or not
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, SENSORML_NB_OUT=str(out), MPLBACKEND="Agg", PYTHONPATH=path)
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=120,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=env)  # passed on to the kernel manager's start_kernel
    text = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            assert o.get("output_type") != "error", f"{name}: {o.get('ename')}: {o.get('evalue')}"
            text.append(o.get("text", "") or "".join(o.get("data", {}).get("text/plain", "")))
    return nb, "\n".join(text)


def images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def test_explore_shows_signals_spectra_and_the_bearing_line(tmp_path, kernel_name):
    nb, text = run("01_explore.ipynb", tmp_path, kernel_name)
    assert images(nb) >= 4
    for fig in ("signals", "spectra", "slow", "recording", "feature_shift"):
        assert (tmp_path / f"{fig}.png").stat().st_size > 1000
    line = next(s for s in text.splitlines() if s.startswith("BPFO at nominal speed"))
    bpfo, strongest = (float(w) for w in line.replace(";", " ").split() if w[0].isdigit())
    assert any(abs(strongest - k * bpfo) < 5.0 for k in (1, 2, 3)), line
    rec = next(s for s in text.splitlines() if s.startswith("recording: envelope line"))
    line_hz, bpfo_hz = (float(w) for w in rec.replace("(", " ").split() if w[0].isdigit())
    assert abs(line_hz - bpfo_hz) < 8.0, rec  # the recording shows the outer-race defect rate
    assert "explore: done" in text


def test_train_evaluate_publish_gives_a_signed_bundle_with_the_evaluated_scores(tmp_path,
                                                                              kernel_name):
    nb, text = run("02_train_evaluate_publish.ipynb", tmp_path, kernel_name)
    store = tmp_path / "store" / "models" / "pump" / "1"
    assert (store / "RELEASE.md").exists()
    from sensorml.bundles.bundle import load_bundle

    b = load_bundle(store, trusted_keys=sorted((tmp_path / "keys").glob("*.pub")))
    assert b.signed_by
    ev = b.manifest.metrics["evaluation"]
    assert ev["trip"]["events"] == 4 and ev["trip"]["detected"] >= 3, ev["trip"]
    assert ev["trip"]["false_alarms"] == 0
    # the gateway's one-row scores equal the offline batch scores to float32 rounding
    diff = next(s for s in text.splitlines() if s.startswith("max |edge - offline|"))
    assert float(diff.split(":")[1]) < 1e-5
    assert images(nb) >= 1 and "train-evaluate-publish: done" in text


def test_monitor_reads_rates_drift_and_labels_from_a_buffer(tmp_path, kernel_name):
    nb, text = run("03_monitor.ipynb", tmp_path, kernel_name)
    assert (tmp_path / "buffer.db").exists()
    assert "events trip:" in text and "labelled events" in text
    before = next(s for s in text.splitlines() if s.startswith("before the fault"))
    after = next(s for s in text.splitlines() if s.startswith("after the fault"))
    assert float(after.split()[-1]) > float(before.split()[-1])  # more windows out of range
    assert images(nb) >= 2 and "monitor: done" in text
