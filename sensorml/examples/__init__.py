"""``sensorml examples DIR``: the example gateway configs and register maps, written out.

They ship as package data (``configs/`` and ``maps/`` beside this module; the simulated
pump's own map is :data:`firmware_bridge.sim.modbus_device.DEFAULT_MAP`) and are read
with :mod:`importlib.resources`, so the same files come out of a checkout and of
``pip install sensorml``. Written as::

    DIR/configs/serial_vibration.toml   the simulator's pty, binary frames, 3 x 25.6 kHz
    DIR/configs/modbus_pump.toml        the simulator's Modbus TCP registers
    DIR/maps/sim_pump.toml              the simulator's register map
    DIR/maps/example_vfd_pump.toml      a VFD and an I/O module on one RS-485 line

A config names its map, keys, bundle and state by paths relative to itself
(``../maps/sim_pump.toml``, ``../keys/signing.pub``), so they work as written from any
directory and everything they make lands under ``DIR``.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     [p.relative_to(d).as_posix() for p in write_examples(Path(d))]
['configs/modbus_pump.toml', 'configs/serial_vibration.toml', 'maps/example_vfd_pump.toml', 'maps/sim_pump.toml']
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from sensorml.errors import SensormlError

__all__ = ["example_files", "write_examples"]


def example_files() -> dict[str, Traversable]:
    """The example files by their path under ``DIR`` (``configs/x.toml``, ``maps/y.toml``)."""
    from firmware_bridge.sim.modbus_device import DEFAULT_MAP

    here = resources.files(__name__)
    out = {f"{sub}/{f.name}": f for sub in ("configs", "maps")
           for f in (here / sub).iterdir() if f.name.endswith(".toml")}
    out[f"maps/{DEFAULT_MAP.name}"] = DEFAULT_MAP
    return dict(sorted(out.items()))


def write_examples(dest: Path, *, force: bool = False) -> list[Path]:
    """Write the example files under ``dest``; return their paths.

    A file already there with the same bytes is left as it is; one that differs (an
    edited config) is not overwritten unless ``force``: :class:`SensormlError` names it.
    """
    files = {dest / rel: f.read_bytes() for rel, f in example_files().items()}
    for path, data in files.items():
        try:
            if not force and path.exists() and path.read_bytes() != data:
                raise SensormlError(f"{path}: exists and differs from the example "
                                    "(edited?); give --force to overwrite it")
        except OSError as e:
            raise SensormlError(f"{path}: cannot read: {e.strerror or e}") from None
    for path, data in files.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as e:
            raise SensormlError(f"{path}: cannot write: {e.strerror or e}") from None
    return list(files)
