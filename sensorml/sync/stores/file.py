"""A folder (local or mounted) as an object store: the embedded default ``file://``.

Inside the store folder no symbolic link is followed, for reading or writing: every name
is walked one folder at a time with ``O_NOFOLLOW`` (``openat`` from the folder before),
so a link planted in the store (``desired/gw1.json -> /var/log/huge``, ``ingest/gw1 ->
/etc``) is refused with :class:`ObjectRefused` instead of read, written through or sized.
The store folder itself may be a link (a mount point chosen by the administrator). Only
regular files are objects: a FIFO or a device node is refused without blocking on it.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from sensorml.sync.stores.base import (
    DEFAULT_MAX_BYTES,
    CloudError,
    NotFound,
    ObjectRefused,
    Store,
    check_name,
    too_large,
)

__all__ = ["FileStore"]

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


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

    def _parent(self, name: str, *, create: bool = False) -> tuple[int, str]:
        """An fd of the folder holding *name* (walked without following links) and the
        last part of the name. FileNotFoundError when a folder is missing (and not
        *create*); ObjectRefused when a folder on the way is a link or not a folder."""
        parts = check_name(name).split("/")
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    nfd = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass  # made by a concurrent put
                    nfd = os.open(part, _DIR, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        link = stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
                        what = "a symbolic link" if link else "not a folder"
                        raise ObjectRefused(f"{self.url}: {name}: {'/'.join(parts[:i + 1])} is "
                                            f"{what}; the store follows no links") from None
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    def put(self, name: str, data: bytes) -> None:
        tmp = ""
        try:
            dfd, last = self._parent(name, create=True)
        except OSError as e:
            raise CloudError(f"{self.url}: cannot write {name} ({e.strerror or e})") from None
        try:
            tmp = f".{last}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644, dir_fd=dfd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, last, src_dir_fd=dfd, dst_dir_fd=dfd)  # replaces a link, never its target
            tmp = ""
            if self.fsync:
                os.fsync(dfd)
        except OSError as e:
            raise CloudError(f"{self.url}: cannot write {name} ({e.strerror or e})") from None
        finally:
            if tmp:
                try:
                    os.unlink(tmp, dir_fd=dfd)
                except OSError:
                    pass
            os.close(dfd)

    def _open(self, name: str) -> int:
        """A read fd of the regular file *name* (see the module docstring)."""
        try:
            dfd, last = self._parent(name)
            try:
                fd = os.open(last, _READ, dir_fd=dfd)
            finally:
                os.close(dfd)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{self.url}: {name} not found") from None
        except ObjectRefused:
            raise
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ObjectRefused(f"{self.url}: {name} is a symbolic link; the store follows "
                                    "no links") from None
            raise CloudError(f"{self.url}: cannot read {name} ({e.strerror})") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ObjectRefused(f"{self.url}: {name} is not a regular file; not read")
        return fd

    def get(self, name: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        fd = self._open(name)
        try:
            size = os.fstat(fd).st_size
            if size > max_bytes:
                raise too_large(self.url, name, size, max_bytes)
            parts, got, n = [], 0, size + 1
            while b := os.read(fd, n):  # to the end: a file that grew past the cap is caught
                parts.append(b)
                got += len(b)
                if got > max_bytes:
                    raise too_large(self.url, name, got, max_bytes)
                n = min(1 << 20, max_bytes + 1 - got)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        except OSError as e:
            raise CloudError(f"{self.url}: cannot read {name} ({e.strerror})") from None
        finally:
            os.close(fd)

    def list(self, prefix: str = "") -> list[str]:
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self.root / base if base else self.root
        out = []
        for dirpath, dirnames, filenames in os.walk(top):  # does not descend into links
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
        """True for a regular file reached without links (what ``get`` would read)."""
        try:
            os.close(self._open(name))
        except (NotFound, ObjectRefused):
            return False
        return True

    def delete(self, name: str) -> None:
        try:
            dfd, last = self._parent(name)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:
            raise CloudError(f"{self.url}: cannot delete {name} ({e.strerror})") from None
        try:
            os.unlink(last, dir_fd=dfd)  # a link itself goes, never what it points to
        except FileNotFoundError:
            pass
        except OSError as e:
            raise CloudError(f"{self.url}: cannot delete {name} ({e.strerror})") from None
        finally:
            os.close(dfd)
