"""Consistent Overhead Byte Stuffing (COBS), the framing of the binary serial format.

COBS rewrites a payload so that it contains no 0x00 byte; 0x00 then marks the end of a
frame on the wire. Each *code block* starts with a code byte ``c`` (1..255) followed by
``c - 1`` data bytes; a code below 0xFF stands for "these bytes, then a zero" (the final
zero is implied and dropped). The overhead is at most one byte per 254.

Both functions work a code block at a time with slicing (never a byte at a time in
Python), so a 3 KB frame of sensor floats with a handful of zero bytes costs a few µs.

>>> encode(b"\\x11\\x22\\x00\\x33")
b'\\x03\\x11"\\x023'
>>> decode(encode(b"\\x00\\x00")) == b"\\x00\\x00"
True
>>> encode(b"")
b'\\x01'
"""

from __future__ import annotations

from firmware_bridge.errors import FrameError

__all__ = ["encode", "decode"]


def encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (without the trailing 0x00 delimiter).

    The output is canonical (the same as the reference algorithm of Cheshire & Baker):
    a final run of exactly ``k * 254`` non-zero bytes gets no trailing ``0x01``.
    """
    out = bytearray()
    pieces = bytes(data).split(b"\x00")
    last = len(pieces) - 1
    for i, piece in enumerate(pieces):
        n = len(piece)
        start = 0
        while n - start >= 254:
            out.append(0xFF)
            out += piece[start : start + 254]
            start += 254
        rest = n - start
        if i < last or rest or n == 0:
            out.append(rest + 1)
            out += piece[start:]
    return bytes(out)


def decode(data: bytes) -> bytes:
    """Decode one COBS frame (without its 0x00 delimiter).

    Raises :class:`~firmware_bridge.errors.FrameError` naming the byte offset if the
    frame contains a 0x00 or a code block runs past the end.
    """
    n = len(data)
    if n == 0:
        raise FrameError("COBS: empty frame")
    zero = data.find(b"\x00")
    if zero >= 0:
        raise FrameError(f"COBS: 0x00 inside the frame at byte {zero}")
    out: list[bytes] = []
    i = 0
    while i < n:
        code = data[i]
        j = i + code
        if j > n:
            raise FrameError(
                f"COBS: code block at byte {i} needs {code - 1} bytes, only {n - i - 1} left"
            )
        out.append(data[i + 1 : j])
        if code != 0xFF and j < n:
            out.append(b"\x00")
        i = j
    return b"".join(out)
