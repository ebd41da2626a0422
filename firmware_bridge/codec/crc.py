"""The checksum of a binary frame: CRC-32 (IEEE 802.3, as ``zlib.crc32``).

Polynomial 0x04C11DB7 (reflected 0xEDB88320), initial value 0xFFFFFFFF, reflected
input and output, final XOR 0xFFFFFFFF — the CRC of Ethernet, zip and PNG, available on
every microcontroller SDK (and in hardware on STM32/ESP32). Sent little endian.

>>> hex(crc32(b"123456789"))   # the standard check value
'0xcbf43926'
"""

from __future__ import annotations

import zlib

__all__ = ["crc32", "CRC_SIZE"]

#: bytes of CRC at the end of every decoded frame
CRC_SIZE = 4


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC of ``data`` as an unsigned int."""
    return zlib.crc32(data) & 0xFFFFFFFF
