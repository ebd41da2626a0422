"""A folder (local or mounted) as an object store: the embedded default ``file://``."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sensorml.sync.stores.base import CloudError, NotFound, Store, check_name

__all__ = ["FileStore"]


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
