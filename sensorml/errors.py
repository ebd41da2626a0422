"""The sensorml exception family.

Every error a user can cause is a :class:`SensormlError` with a one-line message
naming what went wrong and where (file, key path, feature name).

>>> issubclass(BundleHashError, BundleError) and issubclass(BundleError, SensormlError)
True
>>> issubclass(ConfigError, ValueError)
True
"""

from __future__ import annotations

__all__ = [
    "SensormlError",
    "ConfigError",
    "BundleError",
    "BundleFormatError",
    "BundleHashError",
    "BundleSignatureError",
    "BundleSpecError",
    "ModelError",
    "StoreError",
]


class SensormlError(Exception):
    """Base class of every error raised by the sensorml package."""


class ConfigError(SensormlError, ValueError):
    """A configuration value is missing or invalid (message names the key path)."""


class BundleError(SensormlError):
    """A model bundle cannot be used."""


class BundleFormatError(BundleError):
    """The bundle is malformed: missing file, invalid JSON, missing or bad manifest field."""


class BundleHashError(BundleError):
    """The model file does not match the sha256 recorded in the manifest."""


class BundleSignatureError(BundleError):
    """The manifest signature is missing, invalid, or made by an untrusted key."""


class BundleSpecError(BundleError):
    """The bundle's feature spec differs from what the configuration produces."""


class ModelError(SensormlError):
    """The model cannot be run (e.g. the input has the wrong number of features)."""


class StoreError(SensormlError):
    """The local buffer/store failed (SQLite file, migration, size cap)."""
