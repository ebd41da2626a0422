"""A bundle's files on disk: their names, the size limits, reading a bundle directory or a
tar archive into memory (nothing is extracted), and writing either atomically.

Reading refuses what could hurt the gateway, each with one line naming the file: links
and special files, archive entries that escape the directory, too many entries, files
over the limits (:class:`~sensorml.errors.BundleFormatError`).
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from sensorml.errors import BundleFormatError

__all__ = ["MANIFEST", "MODEL", "SIGNATURE", "MAX_MODEL_BYTES", "MAX_SMALL_BYTES",
           "MAX_ARCHIVE_MEMBERS", "read_dir", "read_archive", "write_files", "unpack_bundle"]

MANIFEST, MODEL, SIGNATURE = "manifest.json", "model.onnx", "manifest.sig"
#: size limits when reading a bundle (archive members and directory files alike)
MAX_MODEL_BYTES = 256 << 20
MAX_SMALL_BYTES = 4 << 20
MAX_ARCHIVE_MEMBERS = 64

PathLike = str | os.PathLike


def read_dir(p: Path) -> dict[str, bytes]:
    """The bundle's files from directory ``p`` (those present), each within its size limit."""
    if not p.exists():
        raise BundleFormatError(f"{p}: bundle not found (expected a directory or .tar.gz)")
    files = {}
    for name, limit in ((MANIFEST, MAX_SMALL_BYTES), (MODEL, MAX_MODEL_BYTES),
                        (SIGNATURE, MAX_SMALL_BYTES)):
        f = p / name
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise BundleFormatError(f"{f}: not a regular file")
        if st.st_size > limit:
            raise BundleFormatError(f"{f}: {st.st_size} bytes is larger than the {limit} byte limit")
        with open(f, "rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise BundleFormatError(f"{f}: larger than the {limit} byte limit")
        files[name] = data
    return files


def read_archive(p: Path) -> dict[str, bytes]:
    """The bundle's files from a tar archive, read in memory: nothing is extracted.

    Entries may sit at the top or in one folder. Refused: absolute paths, ``..``, links
    and device files, more than MAX_ARCHIVE_MEMBERS entries, files over the size limits.
    """
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(p, "r:*") as tf:
            for i, m in enumerate(tf):
                if i >= MAX_ARCHIVE_MEMBERS:
                    raise BundleFormatError(f"{p}: more than {MAX_ARCHIVE_MEMBERS} archive entries")
                parts = PurePosixPath(m.name).parts
                if m.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise BundleFormatError(f"{p}: archive entry {m.name!r} escapes the bundle directory")
                if m.isdir():
                    continue
                if not m.isfile():
                    raise BundleFormatError(f"{p}: archive entry {m.name!r} is a link or special "
                                            "file; only regular files are allowed")
                base = parts[-1] if parts else ""
                limit = MAX_MODEL_BYTES if base == MODEL else MAX_SMALL_BYTES
                total += m.size
                if m.size > limit or total > MAX_MODEL_BYTES + 2 * MAX_SMALL_BYTES:
                    raise BundleFormatError(f"{p}: archive entry {m.name!r} is {m.size} bytes, over "
                                            f"the {limit} byte limit")
                if base not in (MANIFEST, MODEL, SIGNATURE) or len(parts) > 2:
                    continue
                if base in files:
                    raise BundleFormatError(f"{p}: archive holds {base} twice")
                fobj = tf.extractfile(m)
                data = fobj.read(limit + 1) if fobj else b""
                if len(data) != m.size:
                    raise BundleFormatError(f"{p}: archive entry {m.name!r} is truncated")
                files[base] = data
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BundleFormatError(f"{p}: not a readable bundle archive: {e}") from None
    return files


def unpack_bundle(archive: PathLike, dest: PathLike) -> Path:
    """Safely unpack a bundle archive into directory *dest* (only the three bundle files)."""
    return write_files(Path(dest), read_archive(Path(archive)))


def write_files(p: PathLike, files: dict[str, bytes], *, replace: bool = True) -> Path:
    """Write *files* as the directory (or ``.tar.gz``) *p*, atomically: a temp sibling
    renamed into place, contents and folder fsynced. An existing *p* is replaced when
    *replace*, else :class:`FileExistsError` (also when another writer got there first)."""
    p = Path(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not replace and p.exists():
        raise FileExistsError(str(p))
    if p.name.endswith((".tar.gz", ".tgz")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                tf.addfile(info, io.BytesIO(data))
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, p)
        else:
            try:
                os.link(tmp, p)  # fails if p appeared meanwhile
            finally:
                os.unlink(tmp)
        _fsync_dir(p.parent)
        return p
    tmp = Path(tempfile.mkdtemp(dir=p.parent, prefix=f".{p.name}.tmp-"))
    old = None
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        if replace and p.exists():
            old = p.parent / f".{p.name}.old-{os.getpid()}"
            os.rename(p, old)
        try:
            os.rename(tmp, p)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError(str(p)) from None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(p.parent)
    return p


def _fsync_dir(p: Path) -> None:
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
