"""The store interface every backend implements, the rule for object names, and the caps.

Every ``get`` is bounded: the object's size is checked before anything is read (a stat of
the file, a HEAD of the S3 object) and the read stops one byte past ``max_bytes``, so an
object replaced by a 3 GiB one, or growing while it is read, costs no memory. Each use
passes its own cap (a desired file 64 KiB, a model 256 MiB); :data:`DEFAULT_MAX_BYTES`
otherwise. A refusal is :class:`ObjectRefused`, one line naming the object and the limit.
"""

from __future__ import annotations

import re

from sensorml.errors import StoreError

__all__ = ["CloudError", "DEFAULT_MAX_BYTES", "NotFound", "ObjectRefused", "Store", "check_name",
           "too_large"]

#: the cap of a ``get`` that names none
DEFAULT_MAX_BYTES = 64 << 20

_NAME = re.compile(r"[A-Za-z0-9._=+@,-]+(/[A-Za-z0-9._=+@,-]+)*")


class CloudError(StoreError):
    """The cloud store failed or refused (unreachable, denied, missing object)."""


class NotFound(CloudError):
    """``get`` of a name that is not in the store."""


class ObjectRefused(CloudError):
    """The store holds the object but it is not read: over its size cap, a symbolic link,
    or not a regular file. Not a transient failure: retrying reads the same object."""


def too_large(where: str, name: str, size: int, max_bytes: int) -> ObjectRefused:
    """The one-line refusal of an object over its cap.

    >>> str(too_large("file:///s", "desired/gw1.json", 3 << 30, 64 << 10))
    'file:///s: desired/gw1.json is 3221225472 bytes, over its 65536-byte limit; not read'
    """
    return ObjectRefused(f"{where}: {name} is {size} bytes, over its {max_bytes}-byte limit; "
                         "not read")


def check_name(name: str) -> str:
    """A store name: relative, ``/``-separated, no ``..``, no empty or hidden parts.

    >>> check_name("ingest/gw1/2026/01/02/events-1-9.smlb.gz")
    'ingest/gw1/2026/01/02/events-1-9.smlb.gz'
    >>> check_name("../etc/passwd")
    Traceback (most recent call last):
    ...
    sensorml.sync.stores.base.CloudError: store name '../etc/passwd': use letters, digits and ._=+@,- in /-separated parts, none starting with '.'
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

    def get(self, name: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """The object's bytes; :class:`NotFound` if there is none, :class:`ObjectRefused`
        if it is larger than *max_bytes* (checked before it is read) or not a plain object."""
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
