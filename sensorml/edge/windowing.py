"""Blocks in, windows out: the :class:`Windower` and the :class:`SlowTracker`.

A :class:`Windower` takes blocks of any size (one sample to many windows) and emits a
:class:`Window` every ``spec.hop`` samples once ``spec.window`` samples are there. The
window completed by the last sample of a block is emitted by the same ``push`` call.

Gaps: a block flagged ``Quality.GAP`` follows missing data, so the samples before it are
dropped and counting starts again with that block: no window spans a gap, and the
first window after it completes ``spec.window`` samples later (``Windower.resets``
counts these). A window's ``quality`` is the OR of the flags of the blocks that gave
its samples (so the first window after a gap carries ``GAP``).

>>> from firmware_bridge.block import Block
>>> from sensorml.edge.features import FeatureSpec
>>> spec = FeatureSpec(channels=("ax",), sample_rate=100.0, window=4, hop=2, bands=((0, 50),))
>>> w = Windower(spec)
>>> blk = Block(t0=0.0, rate=100.0, samples=np.arange(7, dtype=np.float32)[:, None],
...             channels=("ax",))
>>> [(x.seq, x.data[:, 0].tolist(), x.t_end) for x in w.push(blk)]
[(0, [0.0, 1.0, 2.0, 3.0], 0.03), (1, [2.0, 3.0, 4.0, 5.0], 0.05)]
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from firmware_bridge.block import Block, Quality
from sensorml.edge.features import FeatureSpec, SlowWindow
from sensorml.errors import ConfigError

__all__ = ["Window", "Windower", "SlowTracker"]


@dataclass(slots=True)
class Window:
    """One window: ``data`` float32[window, n_fast] (a fresh array, yours to keep),
    ``t_end`` time of its last sample (the source's clock, from ``Block.t0``/``rate``),
    ``t_recv`` ``perf_counter`` of the block that completed it, ``seq`` counts windows
    since the windower was made, ``quality`` the OR of its blocks' flags."""

    data: np.ndarray
    t_end: float
    t_recv: float
    seq: int
    quality: Quality = Quality.GOOD


class Windower:
    """Cuts a stream of blocks into windows of ``spec.window`` samples every ``spec.hop``.

    ``channels`` (optional) are the source's channel names, checked up front; otherwise
    each block's ``channels`` are matched to ``spec.channels`` by name (cached).
    """

    def __init__(self, spec: FeatureSpec, channels: tuple[str, ...] | None = None) -> None:
        self.spec = spec
        self.window, self.hop = spec.window, spec.hop
        self._c = len(spec.channels)
        cap = max(4 * spec.window, spec.window + spec.hop, 4096)
        self._buf = np.empty((cap, self._c), dtype=np.float32)
        self._maps: dict[tuple[str, ...], np.ndarray | None] = {}
        if channels is not None:
            self._index(tuple(channels))
        self.seq = 0
        self.resets = 0
        self.samples = 0
        self._reset()

    def _reset(self) -> None:
        self._fill = 0  # rows used in _buf
        self._count = 0  # samples since the last reset
        self._next = self.window  # _count at which the next window completes
        self._flags: deque[tuple[int, int]] = deque()  # (end count, quality) of flagged blocks

    def _index(self, channels: tuple[str, ...]) -> np.ndarray | None:
        """Column indices of spec.channels in a block (None: they are its first columns)."""
        idx = self._maps.get(channels, False)
        if idx is not False:
            return idx  # type: ignore[return-value]
        missing = [c for c in self.spec.channels if c not in channels]
        if missing:
            raise ConfigError(
                f"source gives channels ({', '.join(channels)}), spec needs "
                f"{', '.join(missing)}: set features.channels to the source's names")
        cols = [channels.index(c) for c in self.spec.channels]
        idx = None if cols == list(range(len(cols))) else np.asarray(cols)
        self._maps[channels] = idx
        return idx

    def reset(self) -> None:
        """Drop buffered samples (the next window needs ``spec.window`` new ones)."""
        self.resets += 1
        self._reset()

    def push(self, block: Block) -> list[Window]:
        """Add a block; return the windows it completed (oldest first)."""
        idx = self._index(block.channels)
        if block.quality & Quality.GAP and self._count:
            self.reset()
        s = block.samples
        n = s.shape[0]
        if n == 0:
            return []
        self.samples += n
        q = int(block.quality)
        if q:
            self._flags.append((self._count + n, q))
        out: list[Window] = []
        buf, cap, win = self._buf, self._buf.shape[0], self.window
        pos = 0
        while pos < n:
            if self._fill == cap:
                keep = self._count - (self._next - win)  # rows the next window needs
                buf[:keep] = buf[cap - keep:]
                self._fill = keep
            take = min(n - pos, self._next - self._count, cap - self._fill)
            dst = buf[self._fill:self._fill + take]
            if idx is None:
                dst[...] = s[pos:pos + take, :self._c]
            else:
                for j, k in enumerate(idx):
                    dst[:, j] = s[pos:pos + take, k]
            self._fill += take
            self._count += take
            pos += take
            if self._count == self._next:
                out.append(self._emit(block, pos - 1))
        return out

    def _emit(self, block: Block, i: int) -> Window:
        start = self._count - self.window
        flags = self._flags
        while flags and flags[0][0] <= start:
            flags.popleft()
        q = 0
        for _, f in flags:
            q |= f
        t_end = block.t0 + i / block.rate if block.rate > 0 else block.t0
        w = Window(self._buf[self._fill - self.window:self._fill].copy(), t_end,
                   block.t_recv, self.seq, Quality(q))
        self.seq += 1
        self._next += self.hop
        return w


class SlowTracker:
    """Keeps the last ``spec.slow_window_s`` seconds of the slow channels.

    Blocks may carry any subset of ``spec.slow_channels`` (several polled sources), plus
    channels the spec doesn't use (ignored). A point a block marks as not read
    (``point_ok`` False) is stored as NaN (missing). :meth:`window` returns a
    :class:`~sensorml.edge.features.SlowWindow` for ``slow=``; it is cached until the next
    push, so scoring many windows between polls costs nothing.

    >>> from firmware_bridge.block import Block
    >>> from sensorml.edge.features import FeatureSpec
    >>> spec = FeatureSpec(channels=("ax",), sample_rate=100.0, window=4,
    ...                    bands=((0, 50),), slow_channels=("temp",), slow_window_s=10)
    >>> st = SlowTracker(spec)
    >>> for t in range(3):
    ...     st.push(Block(t0=float(t), rate=1.0, samples=np.array([[20.0 + t]], np.float32),
    ...                   channels=("temp",)))
    >>> st.ready(), st.window().values[:, 0].tolist()
    (True, [20.0, 21.0, 22.0])
    """

    def __init__(self, spec: FeatureSpec, seconds: float | None = None) -> None:
        self.spec = spec
        self.channels = spec.slow_channels
        self.seconds = float(spec.slow_window_s if seconds is None else seconds)
        self._rows: deque[tuple[float, np.ndarray]] = deque()
        self._cols: dict[tuple[str, ...], list[tuple[int, int]]] = {}
        self._cache: SlowWindow | None = None
        self._ready = False

    def push(self, block: Block) -> None:
        """Add the slow channels of a polled block (one row per sample)."""
        cols = self._cols.get(block.channels)
        if cols is None:
            cols = [(j, block.channels.index(c)) for j, c in enumerate(self.channels)
                    if c in block.channels]
            self._cols[block.channels] = cols
        if not cols or block.n == 0:
            return
        ts = block.timestamps()
        ok = block.point_ok
        for i in range(block.n):
            row = np.full(len(self.channels), np.nan, dtype=np.float32)
            for j, k in cols:
                if ok is None or ok[k]:
                    row[j] = block.samples[i, k]
            self._rows.append((float(ts[i]), row))
        newest = self._rows[-1][0]
        while self._rows and self._rows[0][0] <= newest - self.seconds:
            self._rows.popleft()
        self._cache = None

    def window(self) -> SlowWindow:
        """The rows of the last ``seconds`` (times on the sources' clock, as pushed)."""
        if self._cache is None:
            m, c = len(self._rows), len(self.channels)
            t = np.fromiter((r[0] for r in self._rows), dtype=np.float64, count=m)
            v = np.vstack([r[1] for r in self._rows]) if m else np.empty((0, c), np.float32)
            self._cache = SlowWindow(t, v)
            ok = ~np.isnan(v)
            self._ready = bool(m) and all(
                np.unique(t[ok[:, j]]).size >= 2 for j in range(c))
        return self._cache

    def ready(self) -> bool:
        """True when every slow channel has values at two distinct times at least."""
        self.window()
        return self._ready
