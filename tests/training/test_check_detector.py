"""Every model family passes check_detector: seeded determinism, ONNX parity, score
direction, a planted fault detected, wrong input width refused."""

from __future__ import annotations

import pytest

from training.checks import DetectorCheckError, check_detector
from training.models import FAMILIES

#: the variant each family ships with, plus the rotated IsolationForest
VARIANTS = [(name, {}) for name in sorted(FAMILIES) if name != "iforest"] + \
    [("iforest", {"rotate": "pca"})]


@pytest.mark.parametrize(("family", "params"), VARIANTS, ids=[f"{f}{p}" for f, p in VARIANTS])
def test_family_passes_every_check(family, params):
    fig = check_detector(family, **params)
    assert fig["failures"] == []
    par = fig["parity"]
    assert par["rows"] >= 2000 and par["mismatches"] == 0 and par["verdict_flips"] == 0
    assert fig["fault_detected"]["warn"] >= 0.9
    assert fig["healthy_above_trip"] == 0.0  # fresh healthy rows never trip
    assert fig["onnx_nodes"] <= 20


def test_plain_iforest_passes_all_but_the_correlation_breaking_fault():
    """Known limit, kept visible: trees on the raw features barely see 3 correlated
    features raised 4σ (the row stays near each feature's own range), which is why the
    ``rotate`` option exists. The default stays ``rotate="none"``: on the simulator's
    bearing, imbalance and looseness faults it detects earlier (README, model section)."""
    fig = check_detector("iforest", raise_on_failure=False)
    assert [f.split(":")[0] for f in fig["failures"]] == ["planted fault (3 features +4σ)"]
    assert fig["fault_detected"]["warn"] < 0.5
    # the same forest sees a fault that moves every feature
    fig = check_detector("iforest", n_shifted=12, shift_sigma=4.0)
    assert fig["fault_detected"]["warn"] >= 0.9


def test_a_broken_family_is_caught_with_every_reason():
    """A detector whose score points the wrong way fails direction and detection at once."""
    from dataclasses import replace

    from training.models import get_family, register

    pca = get_family("pca")

    def export_inverted(est, scaler, p):
        from onnx import helper

        m = pca.export(est, scaler, p)
        out = m.graph.node[-1].output[0]
        m.graph.node[-1].output[0] = "raw"
        m.graph.node.append(helper.make_node("Neg", ["raw"], [out]))
        return m

    def reference_inverted(est, scaler, X, p):
        return -pca.reference(est, scaler, X, p)

    register(replace(pca, name="inverted", export=export_inverted, reference=reference_inverted))
    try:
        with pytest.raises(DetectorCheckError) as e:
            check_detector("inverted")
        assert "direction:" in str(e.value) and "planted fault" in str(e.value)
    finally:
        del FAMILIES["inverted"]
