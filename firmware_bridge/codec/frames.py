"""Binary sample frames: COBS-encoded, 0x00-delimited, CRC-32 protected.

The layout is in ``firmware_bridge/PROTOCOL.md``; in short, the decoded payload of a
*data* frame is (little endian)::

    version u8 (=1) | type u8 (=1) | seq u32 | t0_us u64 | channels u8 | sample_type u8
    | n_samples u16 | scale f32 | samples (row-major, n_samples x channels) | crc32 u32

and of a *message* frame (acks, notes from the device)::

    version u8 (=1) | type u8 (=2) | UTF-8 text | crc32 u32

Sample types: 0 = f32, 1 = i16, 2 = i32; every sample's value is ``raw * scale``.

:class:`FrameDecoder` is pure and incremental: bytes in, frames out, no I/O. It splits
the stream at 0x00, so after any garbage it resynchronises at the next delimiter; a piece
that fails COBS, CRC or header checks is counted and skipped, never raised.

>>> import numpy as np
>>> wire = encode_frame(7, 1_000, np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
>>> wire[-1], wire.count(0)
(0, 1)
>>> dec = FrameDecoder()
>>> out = dec.feed(b"noise\\x00" + wire[:5]) + dec.feed(wire[5:] + encode_message("ack STOP"))
>>> out[0].seq, out[0].t0_us, out[0].samples.tolist(), out[1].text
(7, 1000, [[1.0, 2.0], [3.0, 4.0]], 'ack STOP')
>>> dec.frames, dec.messages, dec.rejected, dec.bytes_skipped
(1, 1, 1, 6)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from firmware_bridge.codec import cobs
from firmware_bridge.codec.crc import CRC_SIZE, crc32
from firmware_bridge.errors import FrameError

__all__ = [
    "VERSION",
    "TYPE_DATA",
    "TYPE_MESSAGE",
    "SAMPLE_TYPES",
    "DecodedFrame",
    "Message",
    "FrameDecoder",
    "encode_frame",
    "encode_message",
    "encode_payload",
    "decode_frame",
    "decode_next",
    "decode_payload",
]

VERSION = 1
TYPE_DATA = 1
TYPE_MESSAGE = 2

#: wire code -> (name, numpy little-endian dtype)
SAMPLE_TYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("f32", np.dtype("<f4")),
    1: ("i16", np.dtype("<i2")),
    2: ("i32", np.dtype("<i4")),
}
_CODE_BY_NAME = {name: code for code, (name, _) in SAMPLE_TYPES.items()}
_INT_MAX = {"i16": 32767, "i32": 2147483647}

_DATA_HEADER = struct.Struct("<BBIQBBHf")
DATA_HEADER_SIZE = _DATA_HEADER.size  # 22
_MSG_HEADER = struct.Struct("<BB")
_CRC = struct.Struct("<I")
_SEQ_MOD = 1 << 32

#: the largest decoded payload accepted (header + samples + CRC); longer pieces are garbage
MAX_PAYLOAD = 65536 + DATA_HEADER_SIZE + CRC_SIZE


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """A data frame: ``samples`` is float32 ``[n_samples, channels]`` (already scaled).

    ``missed`` is the number of frames lost just before this one (from the sequence gap);
    ``restart`` is True when the sequence number jumped backwards (device restarted);
    ``rejected`` counts the pieces of the stream rejected since the previous decoded item.
    """

    seq: int
    t0_us: int
    samples: np.ndarray
    sample_type: str = "f32"
    missed: int = 0
    restart: bool = False
    rejected: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    """A text message from the device (e.g. ``ack STOP``)."""

    text: str
    rejected: int = 0


# ---------------------------------------------------------------- encoding


def encode_payload(
    seq: int, t0_us: int, samples: np.ndarray, *, dtype: str = "f32", scale: float | None = None
) -> bytes:
    """The decoded payload of a data frame (header + samples + CRC), before COBS.

    ``samples`` is ``[n, channels]`` (1-D means one channel). For ``i16``/``i32``,
    float samples are quantised with ``scale`` (default: full range of the largest
    magnitude); integer samples are sent as they are with scale 1.
    """
    arr = np.asarray(samples)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"samples must be [n, channels], got shape {arr.shape}")
    n, ch = arr.shape
    if not 1 <= ch <= 255:
        raise ValueError(f"channels: {ch} is not in 1..255")
    if n > 65535:
        raise ValueError(f"n_samples: {n} is not in 0..65535 (split into several frames)")
    if dtype not in _CODE_BY_NAME:
        raise ValueError(f"dtype: {dtype!r} is not one of {sorted(_CODE_BY_NAME)}")
    code = _CODE_BY_NAME[dtype]
    wire_dtype = SAMPLE_TYPES[code][1]
    if dtype == "f32":
        scale = 1.0 if scale is None else float(scale)
        raw = arr.astype(np.float32) if scale == 1.0 else arr / scale
    elif np.issubdtype(arr.dtype, np.integer) and scale is None:
        scale, raw = 1.0, arr
    else:
        top = _INT_MAX[dtype]
        if scale is None:
            peak = float(np.max(np.abs(arr))) if arr.size else 0.0
            scale = peak / top if peak > 0 else 1.0
        scale = float(np.float32(scale))  # quantise with the scale the receiver will see
        raw = np.clip(np.rint(arr.astype(np.float64) / scale), -top - 1, top)
    body = _DATA_HEADER.pack(
        VERSION, TYPE_DATA, seq % _SEQ_MOD, int(t0_us), ch, code, n, scale
    ) + np.ascontiguousarray(raw, dtype=wire_dtype).tobytes()
    return body + _CRC.pack(crc32(body))


def encode_frame(
    seq: int, t0_us: int, samples: np.ndarray, *, dtype: str = "f32", scale: float | None = None
) -> bytes:
    """A data frame ready for the wire: COBS-encoded, ending with the 0x00 delimiter."""
    return cobs.encode(encode_payload(seq, t0_us, samples, dtype=dtype, scale=scale)) + b"\x00"


def encode_message(text: str) -> bytes:
    """A message frame (UTF-8 ``text``) ready for the wire, ending with 0x00.

    >>> encode_message("ack STOP").hex()
    '0f010261636b2053544f501029d48900'
    """
    body = _MSG_HEADER.pack(VERSION, TYPE_MESSAGE) + text.encode("utf-8")
    return cobs.encode(body + _CRC.pack(crc32(body))) + b"\x00"


# ---------------------------------------------------------------- decoding


class CrcMismatch(FrameError):
    """The frame's CRC does not match its content (counted as ``crc_errors``)."""


def decode_payload(payload: bytes) -> DecodedFrame | Message:
    """Check the CRC and header of a decoded payload and return its content.

    Raises :class:`FrameError` (with the reason and byte offset) on any inconsistency.
    """
    size = len(payload)
    if size < _MSG_HEADER.size + CRC_SIZE:
        raise FrameError(f"frame of {size} bytes is shorter than the smallest frame (6)")
    body_end = size - CRC_SIZE
    (sent,) = _CRC.unpack_from(payload, body_end)
    got = crc32(payload[:body_end])
    if sent != got:
        raise CrcMismatch(f"CRC mismatch at byte {body_end}: frame says {sent:08x}, data gives {got:08x}")
    version, ftype = payload[0], payload[1]
    if version != VERSION:
        raise FrameError(f"byte 0: protocol version {version} is not supported (expected {VERSION})")
    if ftype == TYPE_MESSAGE:
        return Message(payload[2:body_end].decode("utf-8", errors="replace"))
    if ftype != TYPE_DATA:
        raise FrameError(f"byte 1: unknown frame type {ftype} (1 = data, 2 = message)")
    if body_end < DATA_HEADER_SIZE:
        raise FrameError(f"data frame of {size} bytes is shorter than its header ({DATA_HEADER_SIZE})")
    _, _, seq, t0_us, ch, code, n, scale = _DATA_HEADER.unpack_from(payload, 0)
    if code not in SAMPLE_TYPES:
        raise FrameError(f"byte 15: unknown sample type {code} (0 = f32, 1 = i16, 2 = i32)")
    name, wire_dtype = SAMPLE_TYPES[code]
    expected = DATA_HEADER_SIZE + n * ch * wire_dtype.itemsize
    if expected != body_end:
        raise FrameError(
            f"data frame: header says {n} x {ch} {name} samples ({expected - DATA_HEADER_SIZE} bytes), "
            f"frame carries {body_end - DATA_HEADER_SIZE}"
        )
    if ch == 0:
        raise FrameError("byte 14: channel count is 0")
    raw = np.frombuffer(payload, wire_dtype, n * ch, DATA_HEADER_SIZE).reshape(n, ch)
    samples = raw.astype(np.float32)
    if scale != 1.0:
        samples *= np.float32(scale)
    return DecodedFrame(seq, t0_us, samples, name)


def decode_frame(encoded: bytes) -> DecodedFrame | Message:
    """Decode one COBS frame (without its 0x00 delimiter). Raises :class:`FrameError`."""
    return decode_payload(cobs.decode(encoded))


def decode_next(data: bytes) -> tuple[int, DecodedFrame | Message | None]:
    """The stateless one-step form (the shape of pymodbus' framers): ``(used, item)``.

    ``used == 0``: no delimiter yet, feed more bytes. ``used > 0``: drop that many bytes;
    ``item`` is the frame, or None if they were idle fill or garbage. No sequence
    accounting (that needs state: use :class:`FrameDecoder`).

    >>> decode_next(b"\\x02")
    (0, None)
    >>> decode_next(b"junk\\x00" + encode_message("hi"))
    (5, None)
    >>> decode_next(encode_message("hi") + b"more")
    (10, Message(text='hi', rejected=0))
    """
    end = data.find(b"\x00")
    if end < 0:
        return 0, None
    if end == 0:
        return 1, None
    try:
        return end + 1, decode_frame(data[:end])
    except FrameError:
        return end + 1, None


class FrameDecoder:
    """Incremental decoder of a byte stream of frames. Pure: no I/O, no clock.

    Resynchronisation: the stream is cut at every 0x00. Each piece between two
    delimiters is decoded on its own; a piece that fails (bad COBS, CRC, header, or
    longer than ``max_payload``) is counted in ``rejected`` (and ``crc_errors``,
    ``cobs_errors`` or ``format_errors``), its bytes plus delimiter in ``bytes_skipped``,
    and decoding goes on at the next piece. Garbage therefore costs at most the frame
    it touches. Empty pieces (runs of 0x00, used by senders as idle fill) are ignored.
    The result does not depend on how the stream is split across :meth:`feed` calls.

    ``last_seq`` continues the sequence check of an earlier decoder (after a reopen).

    Sequence numbers: a jump forward of ``d`` (mod 2**32, ``d < 2**31``) counts one gap
    and ``d - 1`` missed frames; a jump backwards (or a repeat) is a device restart.
    """

    def __init__(self, *, max_payload: int = MAX_PAYLOAD, last_seq: int | None = None) -> None:
        self.max_encoded = max_payload + max_payload // 254 + 1
        self._buf = b""
        self._discarding = 0  # >0: bytes of an oversize piece being thrown away
        self._last_seq = last_seq
        self._rejected_since = 0
        self.frames = 0
        self.messages = 0
        self.rejected = 0
        self.crc_errors = 0
        self.cobs_errors = 0
        self.format_errors = 0
        self.gaps = 0
        self.missed = 0
        self.restarts = 0
        self.bytes_in = 0
        self.bytes_skipped = 0
        #: the reason the last rejected piece was rejected (for logs)
        self.last_error = ""

    @property
    def last_seq(self) -> int | None:
        """Sequence number of the last data frame (None before the first)."""
        return self._last_seq

    def counters(self) -> dict[str, int]:
        """All counters as a dict."""
        keys = ("frames", "messages", "rejected", "crc_errors", "cobs_errors", "format_errors",
                "gaps", "missed", "restarts", "bytes_in", "bytes_skipped")
        return {k: getattr(self, k) for k in keys}

    def feed(self, data: bytes) -> list[DecodedFrame | Message]:
        """Add bytes from the wire; return the frames and messages they complete."""
        self.bytes_in += len(data)
        if self._discarding:
            cut = data.find(b"\x00")
            if cut < 0:
                self._discarding += len(data)
                return []
            self._reject(self._discarding + cut + 1, "frame longer than the maximum")
            self._discarding = 0
            data = data[cut + 1 :]
        if b"\x00" not in data:
            self._buf += data
            self._check_overflow()
            return []
        pieces = (self._buf + data).split(b"\x00")
        self._buf = pieces.pop()
        out: list[DecodedFrame | Message] = []
        for piece in pieces:
            if piece:
                item = self._decode_piece(piece)
                if item is not None:
                    out.append(item)
        self._check_overflow()
        return out

    def _check_overflow(self) -> None:
        if len(self._buf) > self.max_encoded:
            self._discarding = len(self._buf)
            self._buf = b""

    def _reject(self, nbytes: int, reason: str) -> None:
        self.rejected += 1
        self._rejected_since += 1
        self.bytes_skipped += nbytes
        self.last_error = reason

    def _decode_piece(self, piece: bytes) -> DecodedFrame | Message | None:
        if len(piece) > self.max_encoded:
            self._reject(len(piece) + 1, "frame longer than the maximum")
            return None
        try:
            payload = cobs.decode(piece)
        except FrameError as exc:
            self.cobs_errors += 1
            self._reject(len(piece) + 1, str(exc))
            return None
        try:
            item = decode_payload(payload)
        except CrcMismatch as exc:
            self.crc_errors += 1
            self._reject(len(piece) + 1, str(exc))
            return None
        except FrameError as exc:
            self.format_errors += 1
            self._reject(len(piece) + 1, str(exc))
            return None
        rejected, self._rejected_since = self._rejected_since, 0
        if isinstance(item, Message):
            self.messages += 1
            return Message(item.text, rejected) if rejected else item
        self.frames += 1
        missed, restart = 0, False
        if self._last_seq is not None:
            delta = (item.seq - self._last_seq) % _SEQ_MOD
            if delta == 0 or delta >= _SEQ_MOD // 2:
                restart = True
                self.restarts += 1
            elif delta > 1:
                missed = delta - 1
                self.gaps += 1
                self.missed += missed
        self._last_seq = item.seq
        if missed or restart or rejected:
            return DecodedFrame(item.seq, item.t0_us, item.samples, item.sample_type,
                                missed, restart, rejected)
        return item
