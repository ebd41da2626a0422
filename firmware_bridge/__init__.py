"""Talking to devices: serial and Modbus sources, trip actuators and a simulated machine.

Everything is opened from a URL (``serial://``, ``modbus-tcp://``, ``modbus-rtu://``,
``sim://``); see :func:`firmware_bridge.sources.open_source` and
:func:`firmware_bridge.actuators.open_actuator`.
"""

from firmware_bridge.block import Block, Quality
from firmware_bridge.errors import BridgeError, ConfigError, FrameError, TripError

__all__ = ["Block", "Quality", "BridgeError", "ConfigError", "FrameError", "TripError"]
