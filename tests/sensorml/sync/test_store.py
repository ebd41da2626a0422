"""The cloud store interface on a real folder (file://); S3 runs in test_sync_s3.py."""

from __future__ import annotations

import os

import pytest

from sensorml.sync.stores import (
    CloudError,
    FileStore,
    NotFound,
    ObjectRefused,
    check_name,
    open_store,
)
from sensorml.sync.stores.s3 import load_credentials


def test_file_store_put_get_list_exists_delete(tmp_path):
    s = open_store((tmp_path / "cloud").as_uri())
    s.put("ingest/gw1/2026/11/26/a.smlb.gz", b"one")
    s.put("ingest/gw1/2026/11/27/b.smlb.gz", b"two")
    s.put("status/gw1.json", b"{}")
    assert s.get("ingest/gw1/2026/11/26/a.smlb.gz") == b"one"
    assert s.list("ingest/") == ["ingest/gw1/2026/11/26/a.smlb.gz", "ingest/gw1/2026/11/27/b.smlb.gz"]
    assert s.list("ingest/gw1/2026/11/2") == s.list("ingest/")
    assert s.list() == [*s.list("ingest/"), "status/gw1.json"]
    s.put("status/gw1.json", b'{"v": 2}')  # overwrite replaces whole
    assert s.get("status/gw1.json") == b'{"v": 2}'
    s.delete("status/gw1.json")
    s.delete("status/gw1.json")  # already gone: fine
    assert not s.exists("status/gw1.json")
    with pytest.raises(NotFound, match="status/gw1.json not found"):
        s.get("status/gw1.json")


def test_a_put_killed_before_its_rename_leaves_no_object(tmp_path):
    """What a power cut mid-write leaves (the temp file) is invisible to list/exists."""
    s = FileStore(tmp_path, fsync=False)
    (tmp_path / "ingest").mkdir()
    (tmp_path / "ingest" / ".a.smlb.gz.123.ab.tmp").write_bytes(b"half")
    assert s.list() == [] and not s.exists("ingest/a.smlb.gz")
    s.put("ingest/a.smlb.gz", b"whole")
    assert s.list() == ["ingest/a.smlb.gz"]
    assert not [p for p in (tmp_path / "ingest").iterdir() if p.name.startswith(".")
                and p.name != ".a.smlb.gz.123.ab.tmp"]


@pytest.mark.parametrize("name", ["../x", "/abs", "a//b", "a/.hidden", "", "a b"])
def test_names_outside_the_store_are_refused(name):
    with pytest.raises(CloudError, match="store name"):
        check_name(name)


@pytest.mark.parametrize("url, msg", [
    ("", "no store configured"), ("ftp://host/x", "unknown scheme 'ftp'"),
    ("s3://key:secret@bucket/x", "put no keys in the store URL"),
    ("file://host/x", "a file URL has no host")])
def test_bad_store_urls_say_what_to_write(url, msg):
    with pytest.raises(CloudError, match=msg):
        open_store(url)


def test_credentials_come_from_a_private_file_or_the_environment(tmp_path):
    f = tmp_path / "s3.toml"
    f.write_text('access_key = "AK"\nsecret_key = "SK"\n')
    os.chmod(f, 0o644)
    with pytest.raises(CloudError, match="readable by others.*chmod 600"):
        load_credentials(f)
    os.chmod(f, 0o600)
    assert load_credentials(f) == {"access_key": "AK", "secret_key": "SK", "session_token": None}
    env = {"AWS_ACCESS_KEY_ID": "A2", "AWS_SECRET_ACCESS_KEY": "S2",
           "SENSORML_S3_ACCESS_KEY": "A1", "SENSORML_S3_SECRET_KEY": "S1"}
    assert load_credentials(None, env)["access_key"] == "A1"
    del env["SENSORML_S3_ACCESS_KEY"]
    assert load_credentials(None, env)["access_key"] == "A2"
    assert load_credentials(None, {})["access_key"] is None


def test_the_file_store_follows_no_symbolic_link(tmp_path):
    """A link planted in the store is refused for reading, never written through, and
    deleting it removes the link, not its target."""
    s = FileStore(tmp_path / "cloud", fsync=False)
    secret = tmp_path / "outside" / "secret.json"
    secret.parent.mkdir()
    secret.write_text('{"secret": 1}')
    (tmp_path / "cloud" / "desired").mkdir()
    (tmp_path / "cloud" / "desired" / "gw1.json").symlink_to(secret)
    with pytest.raises(ObjectRefused, match=r"desired/gw1.json is a symbolic link; the store "
                                            "follows no links$"):
        s.get("desired/gw1.json")
    assert not s.exists("desired/gw1.json")
    (tmp_path / "cloud" / "ingest").mkdir()
    (tmp_path / "cloud" / "ingest" / "gw1").symlink_to(secret.parent, target_is_directory=True)
    for op in (lambda: s.get("ingest/gw1/secret.json"),
               lambda: s.put("ingest/gw1/2026/a.smlb.gz", b"x"),
               lambda: s.delete("ingest/gw1/secret.json")):
        with pytest.raises(ObjectRefused, match=r"ingest/gw1 is a symbolic link"):
            op()
    assert sorted(p.name for p in secret.parent.iterdir()) == ["secret.json"]
    s.put("desired/gw1.json", b'{"v": 1}')  # replaces the link itself
    assert secret.read_text() == '{"secret": 1}' and s.get("desired/gw1.json") == b'{"v": 1}'
    (tmp_path / "cloud" / "desired" / "gw2.json").symlink_to(secret)
    s.delete("desired/gw2.json")
    assert secret.exists() and not (tmp_path / "cloud" / "desired" / "gw2.json").is_symlink()


def test_the_file_store_checks_the_size_before_reading(tmp_path):
    s = FileStore(tmp_path, fsync=False)
    s.put("desired/gw1.json", b"x" * 1000)
    assert s.get("desired/gw1.json", max_bytes=1000) == b"x" * 1000
    with pytest.raises(ObjectRefused, match=r": desired/gw1.json is 1000 bytes, over its "
                                            r"999-byte limit; not read$"):
        s.get("desired/gw1.json", max_bytes=999)
    with open(tmp_path / "huge.json", "wb") as f:
        f.truncate(1 << 40)  # 1 TiB, sparse
    with pytest.raises(ObjectRefused, match=f"huge.json is {1 << 40} bytes"):
        s.get("huge.json")


def test_a_fifo_in_the_file_store_is_refused_without_blocking(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes; the store opens it
    non-blocking and refuses it as not a regular file."""
    s = FileStore(tmp_path, fsync=False)
    os.mkfifo(tmp_path / "status.json")
    with pytest.raises(ObjectRefused, match="status.json is not a regular file"):
        s.get("status.json")
    assert not s.exists("status.json")
