"""The cloud store: one small interface, backends chosen by URL.

``open_store("file:///var/lib/sensorml-cloud")`` is the embedded default (a local or
mounted folder); ``open_store("s3://bucket/prefix")`` is any S3-compatible store
(AWS S3, MinIO, Ceph) through :mod:`sensorml.store_s3` (the ``[s3]`` extra).

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

import os
import re
import secrets
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sensorml.errors import StoreError

__all__ = ["CloudError", "FileStore", "Store", "check_name", "open_store"]

_NAME = re.compile(r"[A-Za-z0-9._=+@,-]+(/[A-Za-z0-9._=+@,-]+)*")


class CloudError(StoreError):
    """The cloud store failed or refused (unreachable, denied, missing object)."""


class NotFound(CloudError):
    """``get`` of a name that is not in the store."""


def check_name(name: str) -> str:
    """A store name: relative, ``/``-separated, no ``..``, no empty or hidden parts.

    >>> check_name("ingest/gw1/2026/01/02/events-1-9.smlb.gz")
    'ingest/gw1/2026/01/02/events-1-9.smlb.gz'
    >>> check_name("../etc/passwd")
    Traceback (most recent call last):
    ...
    sensorml.store.CloudError: store name '../etc/passwd': use letters, digits and ._=+@,- in /-separated parts, none starting with '.'
    """
    if not _NAME.fullmatch(name or "") or any(p.startswith(".") for p in name.split("/")):
        raise CloudError(f"store name {name!r}: use letters, digits and ._=+@,- in "
                         "/-separated parts, none starting with '.'")
    return name


class Store:
    """put/get/list/exists/delete on names. Subclasses raise :class:`CloudError`."""

    url: str = ""

    def put(self, name: str, data: bytes) -> None:
        """Store *data* under *name* atomically (replacing an existing object)."""
        raise NotImplementedError

    def get(self, name: str) -> bytes:
        """The object's bytes; :class:`NotFound` if there is none."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[str]:
        """Names starting with *prefix*, sorted."""
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        """Remove the object (no error if it is already gone)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class FileStore(Store):
    """A folder as an object store. ``fsync=False`` skips the syncs (tests, tmpfs)."""

    def __init__(self, root: str | Path, *, fsync: bool = True, create: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.url = self.root.as_uri() if self.root.is_absolute() else str(self.root)
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CloudError(f"{self.url}: cannot create the store folder ({e.strerror})") from None
        if not self.root.is_dir():
            raise CloudError(f"{self.url}: store folder does not exist")

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def put(self, name: str, data: bytes) -> None:
        p = self._path(name)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, p)
            if self.fsync:
                dfd = os.open(p.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as e:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise CloudError(f"{self.url}: cannot write {name} ({e.strerror or e})") from None

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self.url}: {name} not found") from None
        except OSError as e:
            raise CloudError(f"{self.url}: cannot read {name} ({e.strerror})") from None

    def list(self, prefix: str = "") -> list[str]:
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self.root / base if base else self.root
        out = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for f in filenames:
                if f.startswith("."):
                    continue  # temp files of puts in progress (or killed)
                n = f if rel == "." else f"{rel}/{f}"
                if n.startswith(prefix):
                    out.append(n)
        return sorted(out)

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def delete(self, name: str) -> None:
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise CloudError(f"{self.url}: cannot delete {name} ({e.strerror})") from None


def open_store(url: str, *, endpoint: str = "", region: str = "",
               credentials: str | Path | None = None, fsync: bool = True) -> Store:
    """The store behind *url*: ``file:///abs/path`` or ``s3://bucket[/prefix]``.

    For S3 the endpoint is *endpoint* or ``$SENSORML_S3_ENDPOINT`` (default AWS); the
    keys come from the 0600 *credentials* file or the environment (see
    :func:`sensorml.store_s3.load_credentials`), never from the URL.
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
        from sensorml.store_s3 import S3Store

        return S3Store(parts.netloc, parts.path.strip("/"), endpoint=endpoint, region=region,
                       credentials=credentials)
    raise CloudError(f"sync.store: unknown scheme {parts.scheme!r} in {url!r} "
                     "(expected file:// or s3://)")
