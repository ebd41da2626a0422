"""One exception family for the device bridge.

Every message is meant for a plant engineer: it names what is wrong and where
(the port, the config key path, the byte offset) and, when there is one, the likely fix.
"""


class BridgeError(Exception):
    """Base of every error raised by :mod:`firmware_bridge`."""


class ConfigError(BridgeError, ValueError):
    """A register map, URL or option is invalid. The message starts with the key path."""


class FrameError(BridgeError):
    """A wire frame could not be decoded (bad COBS, CRC, header). Decoders count these."""


class PortError(BridgeError):
    """A port or server cannot be opened or has gone away."""


class TripError(BridgeError):
    """A trip or reset action failed after its retries. Never swallowed."""
