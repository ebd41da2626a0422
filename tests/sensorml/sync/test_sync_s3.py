"""The sync job against a real S3 protocol server on 127.0.0.1 (moto's server mode), and
through the fault proxy (``tests/support/faultproxy.py``): connections dropped in the middle of
requests and responses, and the endpoint answering 500 and 503."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from support.faultproxy import FaultProxy

from sensorml.buffer.db import Buffer
from sensorml.buffer.queries import BufferQueries
from sensorml.sync.batch import decode_batch
from sensorml.sync.job import SyncFailed, SyncJob
from sensorml.sync.stores import CloudError, NotFound, ObjectRefused, open_store

pytest.importorskip("minio")
moto_server = pytest.importorskip("moto.server")

T0 = 1.764e9
KEYS = {"SENSORML_S3_ACCESS_KEY": "testing", "SENSORML_S3_SECRET_KEY": "testing"}


@pytest.fixture(scope="module")
def endpoint():
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    yield f"http://{host}:{port}"
    srv.stop()


def s3store(endpoint: str, bucket: str, monkeypatch):
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SENSORML_S3_ENDPOINT", endpoint)
    s = open_store(f"s3://{bucket}/fleet-a", region="us-east-1")
    s.make_bucket()
    return s


def fill(path, n: int, start: float = T0) -> None:
    rng = np.random.default_rng(int(start))
    with Buffer(path, device="gw1") as b:
        b.write(events=[b.event_row("alarm", {"i": 1}, start)],
                scores=[(start + i * 0.02, i, 0.5, 0, "1",
                         rng.normal(size=45).astype("<f4").tobytes()) for i in range(n)],
                enforce=False)


def lake(store) -> Counter:
    c: Counter = Counter()
    for name in store.list("ingest/"):
        h, cols = decode_batch(store.get(name), name)
        c.update((h["table"], int(i)) for i in cols["id"])
    return c


def test_s3_store_interface(endpoint, monkeypatch):
    s = s3store(endpoint, "iface", monkeypatch)
    s.put("status/gw1.json", b"{}")
    s.put("ingest/gw1/2026/11/26/a.smlb.gz", b"x" * 100_000)
    assert s.exists("status/gw1.json") and not s.exists("status/gw2.json")
    assert s.list() == ["ingest/gw1/2026/11/26/a.smlb.gz", "status/gw1.json"]
    assert s.list("status/") == ["status/gw1.json"]
    assert s.get("ingest/gw1/2026/11/26/a.smlb.gz") == b"x" * 100_000
    s.delete("status/gw1.json")
    with pytest.raises(NotFound):
        s.get("status/gw1.json")


def test_s3_get_checks_the_size_by_head_before_the_body(endpoint, monkeypatch):
    """The cap is checked on the HEAD's Content-Length; ``tests/faults/test_hostile_store.py``
    shows the body of a 160 MiB object is then never read (peak RSS of the sync job)."""
    s = s3store(endpoint, "capped", monkeypatch)
    s.put("desired/gw1.json", b"x" * 70_000)
    assert s.get("desired/gw1.json", max_bytes=70_000) == b"x" * 70_000
    with pytest.raises(ObjectRefused, match=r"^s3://capped/fleet-a: desired/gw1.json is 70000 "
                                            r"bytes, over its 65536-byte limit; not read$"):
        s.get("desired/gw1.json", max_bytes=64 << 10)
    with pytest.raises(NotFound):
        s.get("desired/gw2.json", max_bytes=64 << 10)


def test_wrong_keys_and_missing_bucket_say_so(endpoint, monkeypatch):
    monkeypatch.setenv("SENSORML_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("SENSORML_S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("SENSORML_S3_SECRET_KEY", "not-the-secret-we-print")
    s = open_store("s3://no-such-bucket/x")
    with pytest.raises(CloudError, match="NoSuchBucket; create bucket 'no-such-bucket'") as e:
        s.put("a", b"1")
    assert "not-the-secret-we-print" not in str(e.value)


def test_sync_to_s3_exactly_once(tmp_path, endpoint, monkeypatch):
    store = s3store(endpoint, "lake", monkeypatch)
    db = tmp_path / "buffer.db"
    fill(db, 2500)
    job = SyncJob(db, store, "gw1", batch_rows=1000)
    assert job.run_once()["uploaded"] == {"events": 1, "scores": 2500}
    fill(db, 10, T0 + 100)
    job.run_once()
    c = lake(store)
    assert len(c) == 2512 and set(c.values()) == {1}
    assert json.loads(store.get("status/gw1.json"))["backlog"]["scores"] == 0


def rerun_until_drained(job: SyncJob, db, tries: int) -> list[SyncFailed]:
    """Run the job again after each failure until the buffer has nothing unsynced;
    returns the failures seen."""
    failures = []
    for _ in range(tries):
        try:
            job.run_once()
        except SyncFailed as e:
            failures.append(e)
            continue
        with BufferQueries.open(db, readonly=True) as q:
            if not q.counts()["scores"].unsynced:
                break
    return failures


def test_connections_dropped_mid_request_then_reruns_give_each_row_once(tmp_path, endpoint,
                                                                         monkeypatch):
    direct = s3store(endpoint, "dropped", monkeypatch)
    relay = FaultProxy(int(endpoint.rsplit(":", 1)[1]), seed=3, cut_share=0.9)
    monkeypatch.setenv("SENSORML_S3_ENDPOINT", relay.url)
    flaky = open_store("s3://dropped/fleet-a", region="us-east-1")
    db = tmp_path / "buffer.db"
    fill(db, 6000)
    failed = rerun_until_drained(SyncJob(db, flaky, "gw1", batch_rows=300), db, 120)
    relay.close()
    assert failed and relay.cuts > 0
    c = lake(direct)
    assert len(c) == 6001 and set(c.values()) == {1}


@pytest.mark.parametrize("status", [500, 503])
def test_endpoint_answering_errors_then_reruns_give_each_row_once(tmp_path, endpoint,
                                                                  monkeypatch, status):
    """Half of the connections to the store get an HTTP ``status`` (an overloaded or
    failing S3 endpoint): runs fail or retry, nothing is marked synced that the store
    did not confirm, and reruns leave every row exactly once at the lake."""
    direct = s3store(endpoint, f"errors{status}", monkeypatch)
    proxy = FaultProxy(int(endpoint.rsplit(":", 1)[1]), seed=status)
    proxy.http_error = (status, 0.5)
    monkeypatch.setenv("SENSORML_S3_ENDPOINT", proxy.url)
    flaky = open_store(f"s3://errors{status}/fleet-a", region="us-east-1")
    db = tmp_path / "buffer.db"
    fill(db, 3000)
    failed = rerun_until_drained(SyncJob(db, flaky, "gw1", batch_rows=300), db, 80)
    proxy.close()
    assert proxy.http_errors > 0
    # each failed run is one log line naming the store and what it could not do
    assert all("\n" not in str(e) and str(e).startswith(f"s3://errors{status}/fleet-a: cannot ")
               for e in failed), failed
    with BufferQueries.open(db, readonly=True) as q:
        assert q.counts()["scores"].unsynced == 0
    c = lake(direct)
    assert len(c) == 3001 and set(c.values()) == {1}
