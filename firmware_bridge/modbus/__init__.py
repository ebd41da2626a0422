"""Modbus RTU/TCP polling: config → check → plan → gather.

- :mod:`.regmap` loads a TOML register map and checks it into frozen dataclasses
  (one :class:`~firmware_bridge.errors.ConfigError` naming the file and key path).
- :mod:`.plan` groups points per device and table into as few reads as possible.
- :mod:`.codec` turns registers into values and back (pure, no I/O).
- :mod:`.client` builds a sync pymodbus client from a ``modbus-tcp://`` / ``modbus-rtu://`` URL.
- :mod:`.source` is :class:`ModbusSource`, the polling source (one ``Block`` per poll).
- :mod:`.testserver` runs pymodbus's own server on 127.0.0.1 for tests and the simulator.
"""
