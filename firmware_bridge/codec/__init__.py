"""Wire codecs of the serial formats: pure functions over bytes, no I/O.

- :mod:`~firmware_bridge.codec.csvlines`: one sample per text line (``println``-friendly).
- :mod:`~firmware_bridge.codec.frames`: COBS-framed binary blocks with sequence numbers,
  device timestamps and CRC-32 (:mod:`~firmware_bridge.codec.cobs`,
  :mod:`~firmware_bridge.codec.crc`).

The byte layout and test vectors are in ``firmware_bridge/PROTOCOL.md``.
"""
