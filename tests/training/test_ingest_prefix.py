"""Rows belong to the device whose prefix they were written under, and come in the order
they were recorded. Real buffers, the real sync job, a real ``file://`` store; the forged
objects are what pump-07's store credentials can write (its own prefixes only)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sensorml.buffer.db import Buffer
from sensorml.buffer.queries import BufferQueries
from sensorml.buffer.rows import EventRow, LabelRow, ScoreRow
from sensorml.sync.batch import batch_name, encode_batch
from sensorml.sync.job import SyncJob
from sensorml.sync.stores import FileStore
from training.ingest import IngestSource, compact, labelled_events, read_ingest

T0 = 1.764e9


def gateway(tmp_path, store, dev: str, label: tuple[str, str] | None = None) -> np.ndarray:
    """One gateway's history (an alarm, a trip, 50 scored windows), optionally a label on
    the trip, synced; returns its feature vectors."""
    feats = np.random.default_rng(len(dev) + ord(dev[-1])).normal(size=(50, 6)).astype("<f4")
    with Buffer(tmp_path / f"{dev}.db", device=dev) as b:
        b.write(events=[b.event_row("alarm", {}, T0), b.event_row("trip", {}, T0 + 1)],
                scores=[(T0 + i, i, 0.1, 0, "1", feats[i].tobytes()) for i in range(50)],
                enforce=False)
    if label:
        with BufferQueries.open(tmp_path / f"{dev}.db") as q:
            q.add_label(2, *label, "ana", t=T0 + 5)
    SyncJob(tmp_path / f"{dev}.db", store, dev).run_once()
    return feats


def forge(store, writer: str, claimed: str, table: str, rows: list) -> str:
    """A batch whose header claims *claimed*, put under *writer*'s prefix."""
    data, head = encode_batch(claimed, table, rows)
    name = batch_name({**head, "device": writer})
    store.put(name, data)
    return name


@pytest.fixture
def fleet(tmp_path):
    store = FileStore(tmp_path / "cloud", fsync=False)
    gateway(tmp_path, store, "pump-07")
    f8 = gateway(tmp_path, store, "pump-08", ("true_fault", "outer race spall"))
    return store, f8


def test_a_label_under_pump_07_claiming_pump_08_does_not_reach_pump_08(fleet, caplog):
    """The finding: pump-07 uploaded a label for pump-08's trip under its own prefix, with
    a header naming pump-08 and pump-08's label id; it sorted first, so pump-08's 'true
    fault' became 'false alarm' in the next retraining."""
    store, _ = fleet
    name = forge(store, "pump-07", "pump-08", "labels", [
        LabelRow(id=1, event_id=2, t=T0 + 9, verdict="false_alarm", note="sensor glitch",
                 author="mallory", synced_at=None)])
    with caplog.at_level(logging.WARNING, "training.ingest"):
        (ev,) = labelled_events(read_ingest(store))
    assert (ev["device"], ev["id"], ev["verdict"], ev["note"]) == \
        ("pump-08", 2, "true_fault", "outer race spall")
    why = (f"{name}: its header claims device 'pump-08' but it was written under "
           "labels/pump-07/; refused (rows belong to the prefix's device)")
    assert [r.getMessage() for r in caplog.records] == [
        f"ingest: skipped {why}", "ingest: 1 object(s) skipped, their rows left out"]
    skipped: list[str] = []
    read_ingest(store, skipped=skipped)
    assert skipped == [why]


def test_an_honest_header_from_pump_07_labels_only_pump_07s_events(fleet):
    store, _ = fleet
    forge(store, "pump-07", "pump-07", "labels", [
        LabelRow(id=7, event_id=2, t=T0 + 9, verdict="false_alarm", note="", author="m",
                 synced_at=None)])
    by_device = {e["device"]: e["verdict"] for e in labelled_events(read_ingest(store))}
    assert by_device == {"pump-07": "false_alarm", "pump-08": "true_fault"}


@pytest.mark.parametrize("table", ["events", "scores"])
def test_events_or_scores_under_pump_07_claiming_pump_08_are_refused(fleet, table):
    """Dedup keeps the first (device, id) seen and ingest/pump-07 sorts before
    ingest/pump-08: before, these rows replaced pump-08's own."""
    store, f8 = fleet
    if table == "events":
        rows = [EventRow(id=2, t=T0 + 1, kind="reset", severity=0, priority=0, device="",
                         model_version=None, synced_at=None, detail={})]
    else:
        rows = [ScoreRow(id=i + 1, t=T0 + i, window_seq=i, score=0.0, verdict=0,
                         model_version="1", synced_at=None,
                         features=np.zeros(6, "<f4").tobytes()) for i in range(50)]
    name = forge(store, "pump-07", "pump-08", table, rows)
    data = read_ingest(store)
    ev = data["events"]
    assert [k for d, k in zip(ev["device"], ev["kind"]) if d == "pump-08"] == ["alarm", "trip"]
    sc = data["scores"]
    mine = [i for i, d in enumerate(sc["device"]) if d == "pump-08"]
    np.testing.assert_array_equal(sc["features"][mine], f8)
    skipped: list[str] = []
    read_ingest(store, skipped=skipped)
    assert len(skipped) == 1 and skipped[0].startswith(f"{name}: its header claims device 'pump-08'")


def test_compact_counts_what_it_refused(fleet, tmp_path):
    store, _ = fleet
    forge(store, "pump-07", "pump-08", "events", [
        EventRow(id=9, t=T0, kind="reset", severity=0, priority=0, device="",
                 model_version=None, synced_at=None, detail={})])
    data, head = encode_batch("pump-07", "labels", [
        LabelRow(id=3, event_id=1, t=T0, verdict="true_fault", note="", author="",
                 synced_at=None)])
    store.put(f"ingest/pump-07/2025/11/24/{head['batch_id']}.smlb.gz", data)  # out of place
    store.put("ingest/PUMP-07/2025/11/24/x.smlb.gz", data)  # not a device id
    counts = compact(store, tmp_path / "lake")
    assert counts["skipped objects"] == 3 and counts["events"] == 4 and counts["labels"] == 1


def test_order_comes_from_row_ids_when_the_wall_clock_stepped_back(tmp_path):
    """NTP stepped the clock back an hour between a trip and its reset (and the operator's
    first and second verdicts): by ``t`` the reset came before the trip, so the fault never
    ended, and the earlier verdict looked like the latest."""
    store = FileStore(tmp_path / "cloud", fsync=False)
    with Buffer(tmp_path / "b.db", device="gw1") as b:
        b.write(events=[b.event_row("trip", {}, T0 + 100),
                        b.event_row("reset", {}, T0 + 100 - 3600 + 5),
                        b.event_row("trip", {}, T0 + 100 - 3600 + 30),
                        b.event_row("reset", {}, T0 + 100 - 3600 + 60)], enforce=False)
    with BufferQueries.open(tmp_path / "b.db") as q:
        q.add_label(1, "false_alarm", "first look", "ana", t=T0 + 120)
        q.add_label(1, "true_fault", "on a second look: spall", "ana", t=T0 - 3000)
        q.add_label(3, "true_fault", "spall again", "ana", t=T0 - 2900)
    SyncJob(tmp_path / "b.db", store, "gw1").run_once()
    src = IngestSource(store, device="gw1")
    assert src.data["events"]["kind"] == ["trip", "reset", "trip", "reset"]
    assert [(e["id"], e["verdict"]) for e in labelled_events(src.data)] == \
        [(1, "true_fault"), (3, "true_fault")]
    assert [(f.start, f.end) for f in src.labels()] == \
        [(T0 + 100, T0 + 100 - 3600 + 5), (T0 + 100 - 3600 + 30, T0 + 100 - 3600 + 60)]
