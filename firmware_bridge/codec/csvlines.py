r"""CSV sample lines: one sample per line, the format any ``println`` can produce.

::

    # channels: ax,ay,az        optional header naming the channels
    0.012,-0.981,0.044          one sample: comma-separated numbers (Python float syntax)
    #ack STOP                   any other line starting with '#' is a message
                                blank lines are ignored; '\r\n' endings are accepted

:class:`CsvDecoder` is pure and incremental: bytes in, ``(rows, messages)`` out. A line
split across :meth:`CsvDecoder.feed` calls is kept until its newline arrives. A malformed
line (wrong field count, not a number, an over-long line) is counted in ``bad_lines``
and skipped, never raised.

Speed: complete lines are parsed a chunk at a time — numpy checks the field count of
every line at once and converts all fields in one ``np.array(tokens, dtype=float32)``
call; only a chunk that contains a malformed line is re-parsed line by line.

>>> dec = CsvDecoder()
>>> rows, msgs = dec.feed(b"# channels: x,y\r\n1,2\r\n3,oops\r\n#ack STOP\r\n5,")
>>> rows.tolist(), msgs, dec.channels, dec.bad_lines
([[1.0, 2.0]], ['ack STOP'], ('x', 'y'), 1)
>>> dec.feed(b"6\n")[0].tolist()
[[5.0, 6.0]]
"""

from __future__ import annotations

import numpy as np

__all__ = ["CsvDecoder", "encode_csv", "HEADER_PREFIX"]

HEADER_PREFIX = b"# channels:"
#: a line longer than this (without a newline) is garbage and is skipped
MAX_LINE = 4096


def encode_csv(samples: np.ndarray, channels: tuple[str, ...] | list[str] | None = None) -> bytes:
    r"""Samples ``[n, ch]`` as CSV lines, preceded by a ``# channels:`` header line when
    ``channels`` is given. Values are written with 9 significant digits (``%.9g``), which
    round-trips every float32 exactly.

    >>> encode_csv(np.array([[0.5, -1.25]], np.float32), ["ax", "ay"])
    b'# channels: ax,ay\n0.5,-1.25\n'
    """
    arr = np.asarray(samples, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"samples must be [n, channels], got shape {arr.shape}")
    head = b""
    if channels is not None:
        if len(channels) != arr.shape[1]:
            raise ValueError(f"channels: {len(channels)} names for {arr.shape[1]} columns")
        head = ("# channels: " + ",".join(channels) + "\n").encode("utf-8")
    fmt = ",".join(["%.9g"] * arr.shape[1]) + "\n"
    return head + "".join([fmt % tuple(row) for row in arr.tolist()]).encode("ascii")


class CsvDecoder:
    """Incremental decoder of CSV sample lines. Pure: no I/O, no clock.

    ``channels``: the expected channel names. When given, they win over a header on the
    wire (a header with a different count is counted in ``header_mismatches``); when not
    given, the header names the channels, or the first data line's field count does
    (``ch0..chN-1``). Rows always have ``len(self.channels)`` columns.

    If a new header changes the channel count mid-stream, rows decoded earlier in the
    same :meth:`feed` call in the old layout are dropped and counted in ``bad_lines``
    (feed returns a single array).
    """

    def __init__(self, channels: tuple[str, ...] | list[str] | None = None) -> None:
        self._fixed = channels is not None
        self.channels: tuple[str, ...] = tuple(channels) if channels is not None else ()
        self._buf = b""
        self._discarding = False
        self._inferred = False  # channel count guessed from the data (no header, no config)
        self.lines = 0
        self.bad_lines = 0
        self.messages = 0
        self.header_mismatches = 0
        self.bytes_in = 0

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def counters(self) -> dict[str, int]:
        keys = ("lines", "bad_lines", "messages", "header_mismatches", "bytes_in")
        return {k: getattr(self, k) for k in keys}

    def feed(self, data: bytes) -> tuple[np.ndarray, list[str]]:
        """Add bytes; return ``(rows float32[n, ch], messages)`` for the complete lines."""
        self.bytes_in += len(data)
        if self._discarding:  # inside an over-long line: drop up to its newline
            cut = data.find(b"\n")
            if cut < 0:
                return self._empty(), []
            self._discarding = False
            data = data[cut + 1 :]
        end = data.rfind(b"\n")
        if end < 0:
            self._buf += data
            if len(self._buf) > MAX_LINE + 1:
                self._buf = b""
                self._discarding = True
                self.bad_lines += 1
            return self._empty(), []
        chunk = self._buf + data[: end + 1]
        self._buf = data[end + 1 :]
        if len(self._buf) > MAX_LINE + 1:
            self._buf = b""
            self._discarding = True
            self.bad_lines += 1
        return self._decode_chunk(chunk)

    # ------------------------------------------------------------ internals

    def _empty(self) -> np.ndarray:
        return np.empty((0, self.n_channels), np.float32)

    def _decode_chunk(self, chunk: bytes) -> tuple[np.ndarray, list[str]]:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        messages: list[str] = []
        if b"#" in chunk or b"\n\n" in chunk or chunk[:1] == b"\n" or b" \n" in chunk:
            chunk = self._split_out(chunk, messages)
            if not chunk:
                return self._empty(), messages
        if not self.channels:
            self._infer(chunk)
        rows = self._parse_fast(chunk)
        if rows is None:
            bad_before = self.bad_lines
            rows = self._parse_slow(chunk)
            if not rows.shape[0] and self._inferred and self._relearn(chunk):
                self.bad_lines = bad_before  # re-parsed with the new layout
                rows = self._parse_slow(chunk)
        self.lines += rows.shape[0]
        return rows, messages

    def _split_out(self, chunk: bytes, messages: list[str]) -> bytes:
        """Take headers, messages and blank lines out of ``chunk``; return the data lines."""
        data: list[bytes] = []
        for line in chunk.split(b"\n")[:-1]:
            stripped = line.strip()
            if not stripped:
                continue
            if len(line) > MAX_LINE:
                self.bad_lines += 1
                continue
            if stripped[:1] != b"#":
                data.append(line)
            elif stripped.lower().startswith(HEADER_PREFIX):
                dropped = self._header(stripped[len(HEADER_PREFIX) :], len(data))
                if dropped:
                    self.bad_lines += len(data)
                    data.clear()
            else:
                messages.append(stripped[1:].strip().decode("utf-8", errors="replace"))
                self.messages += 1
        return b"\n".join(data) + b"\n" if data else b""

    def _header(self, names_text: bytes, rows_before: int) -> bool:
        """Apply a channels header; True if earlier rows of this chunk must be dropped."""
        names = tuple(n.strip().decode("utf-8", errors="replace") for n in names_text.split(b","))
        names = tuple(n for n in names if n)
        if not names:
            return False
        if self._fixed:
            if len(names) != len(self.channels):
                self.header_mismatches += 1
            return False
        changed = bool(self.channels) and len(names) != len(self.channels)
        self.channels = names
        self._inferred = False
        return changed and rows_before > 0

    @staticmethod
    def _newlines(chunk: bytes) -> np.ndarray:
        return np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10)

    @staticmethod
    def _field_counts(chunk: bytes) -> np.ndarray:
        """Fields per line of ``chunk`` (which ends with a newline), vectorised."""
        raw = np.frombuffer(chunk, np.uint8)
        newlines = np.flatnonzero(raw == 10)
        return np.diff(np.cumsum(raw == 44)[newlines], prepend=0) + 1

    def _infer(self, chunk: bytes) -> None:
        """Channel count from the most common field count (the first line read from a
        port opened mid-stream is usually cut short, so it does not decide)."""
        counts = self._field_counts(chunk)
        n = int(np.bincount(counts).argmax())
        self.channels = tuple(f"ch{i}" for i in range(n))
        self._inferred = True

    def _relearn(self, chunk: bytes) -> bool:
        """An inferred layout that fits none of 8+ consistent lines was a wrong guess."""
        counts = self._field_counts(chunk)
        if counts.size < 8 or counts.min() != counts.max():
            return False
        self.channels = tuple(f"ch{i}" for i in range(int(counts[0])))
        return True

    def _parse_fast(self, chunk: bytes) -> np.ndarray | None:
        """All lines at once; None if any line is malformed."""
        ch = self.n_channels
        fields = self._field_counts(chunk)
        if fields.size and (fields.min() != ch or fields.max() != ch):
            return None
        if len(chunk) > MAX_LINE and np.diff(self._newlines(chunk), prepend=-1).max() > MAX_LINE + 1:
            return None
        tokens = chunk.replace(b"\n", b",").split(b",")
        tokens.pop()  # after the final newline
        try:
            values = np.array(tokens, dtype=np.float32)
        except ValueError:
            return None
        return values.reshape(-1, ch)

    def _parse_slow(self, chunk: bytes) -> np.ndarray:
        """Line by line, counting and skipping malformed lines."""
        ch = self.n_channels
        good: list[list[float]] = []
        for line in chunk.split(b"\n")[:-1]:
            if not line.strip():
                continue
            fields = line.split(b",")
            if len(fields) != ch or len(line) > MAX_LINE:
                self.bad_lines += 1
                continue
            try:
                good.append([float(f) for f in fields])
            except ValueError:
                self.bad_lines += 1
        if not good:
            return self._empty()
        return np.array(good, dtype=np.float32).reshape(-1, ch)
