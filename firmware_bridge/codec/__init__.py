"""Wire codecs of the serial formats: pure functions over bytes, no I/O.

- :mod:`~firmware_bridge.codec.csvlines`: one sample per text line (``println``-friendly).
- :mod:`~firmware_bridge.codec.frames`: COBS-framed binary blocks with sequence numbers,
  device timestamps and CRC-32 (:mod:`~firmware_bridge.codec.cobs`,
  :mod:`~firmware_bridge.codec.crc`).

The byte layout and test vectors are in ``firmware_bridge/PROTOCOL.md``.
"""

__all__ = ["detect_format"]


def detect_format(head: bytes) -> str | None:
    """Guess the wire format from the first bytes; None while undecided.

    A 0x00 only ever appears in binary frames; CSV is printable text with newlines.

    >>> detect_format(b"1.0,2.0\\n3.0,4.0\\n5.0,6.0\\n"), detect_format(b"\\x05ab\\x00")
    ('csv', 'frames')
    >>> detect_format(b"1.0,2")
    """
    if b"\x00" in head:
        return "frames"
    if head.count(b"\n") >= 3 and not head.translate(None, bytes(range(32, 127)) + b"\t\r\n"):
        return "csv"
    return "csv" if len(head) >= 8192 else None
