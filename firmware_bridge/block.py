"""The unit that flows from every source to the edge loop: a block of samples."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class Quality(enum.IntFlag):
    """Flags on a block; ``GOOD`` (0) means nothing to report.

    >>> Quality.GAP | Quality.CRC
    <Quality.GAP|CRC: 6>
    >>> bool(Quality.GOOD)
    False
    """

    GOOD = 0
    #: the block follows missing data (sequence gap, or an outage of the source)
    GAP = 2
    #: frames were rejected (bad CRC/COBS) since the previous block
    CRC = 4
    #: one or more points failed to read (Modbus: see ``Block.point_ok``)
    PARTIAL = 8
    #: first block after the source came back from an outage
    RECOVERED = 16
    #: values are stale (device reported it, or a poll overran)
    STALE = 32


@dataclass(frozen=True, slots=True)
class Block:
    """A block of samples from one source.

    ``samples`` is float32 of shape ``[n, len(channels)]``. ``t0`` is the time of the
    first sample in seconds (host ``time.monotonic()`` unless the source says otherwise);
    ``rate`` is samples per second (for polled sources, the poll rate). ``seq`` counts the
    blocks of a source, or carries the device's frame sequence number. ``point_ok`` is a
    bool per channel for sources that read points separately (Modbus), else ``None``.
    ``t_recv`` is the host ``time.perf_counter()`` when the bytes that completed the block
    arrived (used to measure sample-to-trip latency).
    """

    t0: float
    rate: float
    samples: np.ndarray
    channels: tuple[str, ...]
    seq: int = 0
    quality: Quality = Quality.GOOD
    source: str = ""
    point_ok: np.ndarray | None = None
    t_recv: float = 0.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.samples
        if s.ndim != 2 or s.shape[1] != len(self.channels):
            raise ValueError(
                f"block samples have shape {s.shape}, expected [n, {len(self.channels)}] "
                f"for channels {self.channels}"
            )

    @property
    def n(self) -> int:
        """Number of samples (rows)."""
        return int(self.samples.shape[0])

    def timestamps(self) -> np.ndarray:
        """Per-sample timestamps (float64 seconds) derived from ``t0`` and ``rate``."""
        if self.rate <= 0:
            return np.full(self.n, self.t0)
        return self.t0 + np.arange(self.n) / self.rate
