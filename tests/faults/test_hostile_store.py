"""A hostile cloud store: objects that would take the sync job or training down by their size.

Each case runs the real command in its own process (``sensorml sync --once``, ``training
compact``) and measures that process's peak RSS with ``os.wait4`` (the kernel's figure for
that one process): what is refused must be refused before
it is in memory (the command starts from a small launcher process, see :data:`LAUNCHER`).
Before these were bounded, the 3 GiB desired file took ``sensorml sync`` to
3.1 GB RSS and a 1 MB gzip inflated to 1 GiB in training.

moto's S3 server (on 127.0.0.1, in this process) stands in for S3: it is the real protocol,
served by a test double because no S3 service runs here.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from sensorml.buffer.db import Buffer
from sensorml.buffer.queries import BufferQueries
from sensorml.sync.batch import FORMAT, encode_batch

pytestmark = pytest.mark.timeout(180)

T0 = 1.764e9
DEV = "pump-07"


#: starts the command from a fresh, small process and writes the command's peak RSS: a child
#: forked straight from the test session would start with the session's own high-water mark
#: (Linux carries it across exec), which is not the command's
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss * 1024))  # KiB on Linux
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(argv: list[str], tmp_path: Path, timeout: float = 150.0
                 ) -> tuple[int, str, str, int]:
    """Run *argv*; ``(exit status, stdout, stderr, peak RSS in bytes)`` of that process."""
    out, err, rss = tmp_path / "cmd.out", tmp_path / "cmd.err", tmp_path / "cmd.rss"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        r = subprocess.run([sys.executable, "-c", LAUNCHER, str(rss), *argv], stdout=fo,
                           stderr=fe, timeout=timeout)
    return r.returncode, out.read_text(), err.read_text(), int(rss.read_text())


def gateway(tmp_path: Path, pub: Path, store_url: str) -> Path:
    """A gateway config set up for redeployment, and a buffer with one event to upload."""
    state = tmp_path / "state"
    state.mkdir()
    with Buffer(state / "buffer.db", device=DEV) as b:
        b.write(events=[b.event_row("alarm", {}, T0)], enforce=False)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'device_id = "{DEV}"\nstate_dir = "{state}"\n[source]\nurl = "sim://pump"\n'
                   f'[model]\nbundle = "{state / "bundles" / "current"}"\n'
                   f'trusted_keys = ["{pub}"]\n[sync]\nstore = "{store_url}"\n')
    return cfg


def sync_once(cfg: Path, tmp_path: Path) -> tuple[dict, int]:
    rc, out, err, rss = run_measured([sys.executable, "-m", "sensorml.cli", "sync", "--config",
                                      str(cfg), "--once"], tmp_path)
    assert rc == 0, out + err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["uploaded"] == {"events": 1}  # the upload is not held up by the download
    return report["steps"]["deploy"], rss


def sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_a_3_gib_desired_file_is_refused_before_it_is_read(tmp_path, keys, fault_report):
    cloud = tmp_path / "cloud"
    sparse(cloud / "desired" / f"{DEV}.json", 3 << 30)
    dep, rss = sync_once(gateway(tmp_path, keys[1], cloud.as_uri()), tmp_path)
    print(f"peak RSS of sensorml sync refusing a 3 GiB desired file: {rss / 2**20:.0f} MiB")
    fault_report.add("store_desired_3gib", peak_rss_mib=round(rss / 2**20, 1))
    assert rss < (3 << 30) / 24
    assert dep["action"] == "refused", dep
    assert dep["message"] == (f"{cloud.as_uri()}: desired/{DEV}.json is {3 << 30} bytes, over "
                              "its 65536-byte limit; not read")


def test_a_symlink_in_a_file_store_is_refused_not_followed(tmp_path, keys, fault_report):
    cloud = tmp_path / "cloud"
    (cloud / "desired").mkdir(parents=True)
    target = sparse(tmp_path / "elsewhere" / "huge.json", 3 << 30)
    (cloud / "desired" / f"{DEV}.json").symlink_to(target)
    dep, rss = sync_once(gateway(tmp_path, keys[1], cloud.as_uri()), tmp_path)
    print(f"peak RSS of sensorml sync refusing a link to a 3 GiB file: {rss / 2**20:.0f} MiB")
    fault_report.add("store_symlink", peak_rss_mib=round(rss / 2**20, 1))
    assert rss < (3 << 30) / 24
    assert dep["action"] == "refused", dep
    assert dep["message"] == (f"{cloud.as_uri()}: desired/{DEV}.json is a symbolic link; the "
                              "store follows no links")


def test_a_large_desired_object_on_s3_is_refused_by_its_head(tmp_path, keys, fault_report,
                                                             monkeypatch):
    pytest.importorskip("minio")
    moto_server = pytest.importorskip("moto.server")
    from sensorml.sync.stores import open_store

    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    try:
        host, port = srv.get_host_and_port()
        for k, v in {"SENSORML_S3_ENDPOINT": f"http://{host}:{port}",
                     "SENSORML_S3_ACCESS_KEY": "testing", "SENSORML_S3_SECRET_KEY": "testing"}.items():
            monkeypatch.setenv(k, v)
        size = 160 << 20
        store = open_store("s3://hostile/site-a", region="us-east-1")
        store.make_bucket()
        store.put(f"desired/{DEV}.json", bytes(size))
        dep, rss = sync_once(gateway(tmp_path, keys[1], "s3://hostile/site-a"), tmp_path)
    finally:
        srv.stop()
    print(f"peak RSS of sensorml sync refusing a 160 MiB desired object on S3: {rss / 2**20:.0f} MiB")
    fault_report.add("store_s3_desired_160mib", peak_rss_mib=round(rss / 2**20, 1))
    assert rss < size / 2
    assert dep["action"] == "refused", dep
    assert dep["message"] == (f"s3://hostile/site-a: desired/{DEV}.json is {size} bytes, over "
                              "its 65536-byte limit; not read")


def gzip_bomb(head: bytes, inflated: int) -> bytes:
    """A valid gzip stream of *head* then zeros, *inflated* bytes in all, about 1000x smaller:
    one compressed MiB of zeros after a full flush is the same bytes every time, so it is
    made once and repeated; the trailer carries the true CRC and size."""
    mib = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = c.compress(head) + c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)
    n = (inflated - len(head)) >> 20
    crc = zlib.crc32(mib, zlib.crc32(head))
    for _ in range(n - 1):
        crc = zlib.crc32(mib, crc)
    end = c.flush()[:-8] + struct.pack("<II", crc, (len(head) + (n << 20)) & 0xFFFFFFFF)
    return first + block * (n - 1) + end


def bomb_header(declared: int) -> bytes:
    h = {"format": FORMAT, "version": 1, "schema": "0001_initial", "device": DEV,
         "table": "scores", "batch_id": "scores-000000000901-000000000901", "rows": 1,
         "first_id": 901, "last_id": 901, "t_first": T0, "t_min": T0, "t_max": T0,
         "payload_bytes": declared, "payload_sha256": "0" * 64, "columns": []}
    return json.dumps(h).encode() + b"\n"


def test_a_gzip_bomb_in_a_gateways_prefix_is_refused_while_inflating(tmp_path, fault_report):
    """1 MB that inflates to 1 GiB, twice: one that lies about its payload size, one without
    a header at all. Training compacts the honest batch beside them and names both."""
    from sensorml.sync.stores import FileStore

    store = FileStore(tmp_path / "cloud", fsync=False)
    with Buffer(tmp_path / "b.db", device=DEV) as b:
        b.write(scores=[(T0 + i, i, 0.1, 0, "1", bytes(24)) for i in range(50)], enforce=False)
    with BufferQueries.open(tmp_path / "b.db", readonly=True) as q:
        data, head = encode_batch(DEV, "scores", q.unsynced("scores", 100))
    store.put(f"ingest/{DEV}/2025/11/24/{head['batch_id']}.smlb.gz", data)
    liar = gzip_bomb(bomb_header(1000), 1 << 30)
    headless = gzip_bomb(b"", 1 << 30)
    store.put(f"ingest/{DEV}/2025/11/24/scores-000000000901-000000000901.smlb.gz", liar)
    store.put(f"ingest/{DEV}/2025/11/24/scores-000000000902-000000000902.smlb.gz", headless)
    rc, out, err, rss = run_measured(
        [sys.executable, "-m", "training.cli", "--quiet", "compact", "--store", store.url,
         "--out", str(tmp_path / "lake")], tmp_path)
    print(f"bombs: {len(liar)} and {len(headless)} bytes stored, 1 GiB each inflated; peak RSS "
          f"of training compact: {rss / 2**20:.0f} MiB")
    fault_report.add("store_gzip_bomb", stored_bytes=len(liar), inflated_bytes=1 << 30,
                     peak_rss_mib=round(rss / 2**20, 1))
    assert rss < (1 << 30) / 4
    assert rc == 0, out + err
    assert "scores 50" in out and "skipped objects 2" in out, out
    assert "scores-000000000901-000000000901.smlb.gz: inflates past the 1000 payload bytes its " \
           "header declares; refused" in err, err
    assert "scores-000000000902-000000000902.smlb.gz: not a sensorml-batch file" in err, err


def test_a_model_over_256_mib_is_refused_before_its_download(tmp_path, keys, fault_report):
    """A signed desired file names version 2, whose model.onnx in the store is 300 MiB (the
    bundle limit is 256 MiB): refused by its size, before a byte of it is read."""
    from sensorml.bundles.desired import make_desired
    from sensorml.bundles.files import MAX_MODEL_BYTES

    cloud = tmp_path / "cloud"
    data, sig = make_desired("device", DEV, "pump", "2", key=keys[0])
    (cloud / "desired").mkdir(parents=True)
    (cloud / "desired" / f"{DEV}.json").write_bytes(data)
    (cloud / "desired" / f"{DEV}.json.sig").write_bytes(sig)
    (cloud / "models" / "pump" / "2").mkdir(parents=True)
    (cloud / "models" / "pump" / "2" / "manifest.json").write_text("{}")
    sparse(cloud / "models" / "pump" / "2" / "model.onnx", 300 << 20)
    dep, rss = sync_once(gateway(tmp_path, keys[1], cloud.as_uri()), tmp_path)
    print(f"peak RSS of sensorml sync refusing a 300 MiB model: {rss / 2**20:.0f} MiB")
    fault_report.add("store_model_300mib", peak_rss_mib=round(rss / 2**20, 1))
    assert rss < (300 << 20) / 4
    assert dep["action"] == "refused", dep
    assert dep["message"] == (f"{cloud.as_uri()}: models/pump/2/model.onnx is {300 << 20} bytes, "
                              f"over its {MAX_MODEL_BYTES}-byte limit; not read")
