"""The store interface every backend implements, and the rule for object names."""

from __future__ import annotations

import re

from sensorml.errors import StoreError

__all__ = ["CloudError", "NotFound", "Store", "check_name"]

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
