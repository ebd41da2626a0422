"""The cloud store: one small interface, backends chosen by URL.

``open_store("file:///var/lib/sensorml-cloud")`` is the embedded default (a local or
mounted folder); ``open_store("s3://bucket/prefix")`` is any S3-compatible store
(AWS S3, MinIO, Ceph) through :mod:`sensorml.sync.stores.s3` (the ``[s3]`` extra).

Names are ``/``-separated relative paths (``ingest/gw1/2026/11/26/scores-...``); the
layout is the sync contract in DESIGN.md. Every ``put`` is atomic: a reader sees the
old object or the whole new one, never a part (files: temp file + fsync + rename + fsync
of the folder; S3: one PUT). So an upload interrupted at any point leaves nothing, and
a repeated upload of the same name with the same bytes is harmless.

>>> import tempfile
>>> s = open_store("file://" + tempfile.mkdtemp())
>>> s.put("status/gw1.json", b"{}")
>>> s.exists("status/gw1.json"), s.get("status/gw1.json"), s.list("status/")
(True, b'{}', ['status/gw1.json'])
>>> s.delete("status/gw1.json"); s.exists("status/gw1.json")
False
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from sensorml.sync.stores.base import (
    DEFAULT_MAX_BYTES,
    CloudError,
    NotFound,
    ObjectRefused,
    Store,
    check_name,
)
from sensorml.sync.stores.file import FileStore

__all__ = ["CloudError", "DEFAULT_MAX_BYTES", "FileStore", "NotFound", "ObjectRefused", "Store",
           "check_name", "open_store"]


def open_store(url: str, *, endpoint: str = "", region: str = "",
               credentials: str | Path | None = None, fsync: bool = True) -> Store:
    """The store behind *url*: ``file:///abs/path`` or ``s3://bucket[/prefix]``.

    For S3 the endpoint is *endpoint* or ``$SENSORML_S3_ENDPOINT`` (default AWS); the
    keys come from the 0600 *credentials* file or the environment (see
    :func:`sensorml.sync.stores.s3.load_credentials`), never from the URL.
    """
    if not url:
        raise CloudError("sync.store: no store configured (e.g. file:///var/lib/sensorml-cloud "
                         "or s3://bucket/prefix)")
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise CloudError(f"sync.store: {url!r}: a file URL has no host (file:///abs/path)")
        return FileStore(unquote(parts.path), fsync=fsync)
    if parts.scheme == "s3":
        if parts.username or parts.password:
            raise CloudError("sync.store: put no keys in the store URL; use sync.credentials "
                             "(a 0600 file) or the environment")
        from sensorml.sync.stores.s3 import S3Store

        return S3Store(parts.netloc, parts.path.strip("/"), endpoint=endpoint, region=region,
                       credentials=credentials)
    raise CloudError(f"sync.store: unknown scheme {parts.scheme!r} in {url!r} "
                     "(expected file:// or s3://)")
