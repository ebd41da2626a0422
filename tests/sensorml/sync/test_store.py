"""The cloud store interface on a real folder (file://); S3 runs in test_sync_s3.py."""

from __future__ import annotations

import os

import pytest

from sensorml.sync.stores import CloudError, FileStore, NotFound, check_name, open_store
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
