"""A simulated rotating machine with fault injection, served the way real devices serve data.

- :mod:`~firmware_bridge.sim.machine`: the signal model (:class:`Machine`): 3-axis vibration
  with running-speed harmonics, vane pass, bearing defect ring-downs, noise, speed/load
  schedules, coast-down on STOP; slow values (temperature, current, pressure, speed).
- :mod:`~firmware_bridge.sim.faults`: bearing geometry and defect frequencies, the fault
  catalogue, scheduled/ramped severities.
- :mod:`~firmware_bridge.sim.replay`: play a recorded CSV through the same outputs; record one
  (``python -m firmware_bridge.sim.replay`` remakes ``data/sim/pump_outer_race_2k.csv``).
- :mod:`~firmware_bridge.sources.sim`: ``sim://`` URLs, an in-process source of blocks.
- :mod:`~firmware_bridge.sim.serial_device` / :mod:`~firmware_bridge.sim.modbus_device`:
  a pty streaming CSV or frames, a Modbus TCP (and RTU on a pty) server, on
  :mod:`~firmware_bridge.sim.modbus_server` (pymodbus's server for tests and the simulator;
  its pymodbus parts in :mod:`~firmware_bridge.sim.modbus_backend`) and
  :mod:`~firmware_bridge.sim.ptylink` (two ttys joined like a null-modem cable).
- :mod:`~firmware_bridge.sim.cli`: ``sensorml simulate``.
"""

from firmware_bridge.sim.faults import FAULTS, BearingGeometry, FaultEvent
from firmware_bridge.sim.machine import Machine
from firmware_bridge.sim.schedule import SetPoint

__all__ = ["FAULTS", "BearingGeometry", "FaultEvent", "Machine", "SetPoint"]
