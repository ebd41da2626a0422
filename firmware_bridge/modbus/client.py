"""Build a synchronous pymodbus client from a ``modbus-tcp://`` or ``modbus-rtu://`` URL.

One function picks the transport from the URL's scheme (as pyserial's
``serial_for_url`` does)::

    modbus-tcp://127.0.0.1:5020                     TCP, port defaults to 502
    modbus-rtu:///dev/ttyUSB1?baud=19200&parity=N&stopbits=1&bytesize=8

Both the polling source and the trip actuators use :func:`make_client`. The client is
returned *unconnected*; pymodbus's sync clients connect on first use and after a
dropped link they reconnect on the next request, so the caller owns the reconnect
pacing (backoff). We never pass ``reconnect_delay=0`` (upstream #1794: it spins a core).

Query keys that are not about the transport (``map=``, ``rate=``...) are left in
:attr:`ModbusURL.params` for the caller to check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pymodbus.client import ModbusSerialClient, ModbusTcpClient

from firmware_bridge.errors import ConfigError
from firmware_bridge.parsing import split_url

#: query keys consumed by the serial (RTU) transport
SERIAL_KEYS = ("baud", "parity", "stopbits", "bytesize")
_PARITIES = ("N", "E", "O")

ModbusClient = ModbusTcpClient | ModbusSerialClient

#: Modbus exception codes, as a person would say them
EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "device failure", 5: "acknowledge", 6: "device busy",
    10: "gateway path unavailable", 11: "gateway target did not respond",
}


@dataclass(frozen=True, slots=True)
class ModbusURL:
    """A parsed Modbus URL.

    >>> u = parse_modbus_url("modbus-tcp://127.0.0.1:5020?map=pump.toml")
    >>> (u.scheme, u.host, u.port, u.params)
    ('modbus-tcp', '127.0.0.1', 5020, {'map': 'pump.toml'})
    >>> u = parse_modbus_url("modbus-rtu:///dev/ttyUSB1?baud=9600&parity=E")
    >>> (u.scheme, u.device, u.baud, u.parity, u.stopbits)
    ('modbus-rtu', '/dev/ttyUSB1', 9600, 'E', 1)
    """

    scheme: str
    host: str = ""
    port: int = 502
    device: str = ""
    baud: int = 19200
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    #: query keys not used by the transport (e.g. ``map``, ``rate``)
    params: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """``host:port`` or the serial device, for messages."""
        return f"{self.host}:{self.port}" if self.scheme == "modbus-tcp" else self.device


def _int_param(url: str, query: dict[str, str], key: str, default: int, allowed=None) -> int:
    if key not in query:
        return default
    text = query.pop(key)
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{url}: {key}={text!r} is not an integer") from None
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{url}: {key}={value} is not one of {', '.join(map(str, allowed))}")
    return value


def parse_modbus_url(url: str) -> ModbusURL:
    """Parse a Modbus URL; a bad one is a :class:`ConfigError` naming the URL and the part."""
    scheme, rest, query = split_url(url)
    if scheme == "modbus-tcp":
        hostport = rest.strip("/")
        if not hostport:
            raise ConfigError(f"{url}: no host (expected modbus-tcp://host:port)")
        host, port = hostport, 502
        if hostport.startswith("["):  # [::1]:502
            host, _, tail = hostport[1:].partition("]")
            if tail.startswith(":"):
                port = _parse_port(url, tail[1:])
        elif ":" in hostport:
            host, _, p = hostport.rpartition(":")
            port = _parse_port(url, p)
        return ModbusURL(scheme, host=host, port=port, params=query)
    if scheme == "modbus-rtu":
        if not rest:
            raise ConfigError(f"{url}: no serial device (expected modbus-rtu:///dev/ttyUSB0)")
        baud = _int_param(url, query, "baud", 19200)
        if baud <= 0:
            raise ConfigError(f"{url}: baud={baud} must be positive")
        parity = query.pop("parity", "N").upper()
        if parity not in _PARITIES:
            raise ConfigError(f"{url}: parity={parity!r} is not one of N, E, O")
        stopbits = _int_param(url, query, "stopbits", 1, (1, 2))
        bytesize = _int_param(url, query, "bytesize", 8, (5, 6, 7, 8))
        return ModbusURL(
            scheme, device=rest, baud=baud, parity=parity, stopbits=stopbits,
            bytesize=bytesize, params=query,
        )
    raise ConfigError(f"{url}: unknown scheme {scheme!r} (expected modbus-tcp or modbus-rtu)")


def _parse_port(url: str, text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"{url}: port {text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{url}: port {port} is not in 1..65535")
    return port


def make_client(url: str | ModbusURL, timeout_s: float = 0.5, *, retries: int = 0) -> ModbusClient:
    """Return an unconnected sync pymodbus client for ``url``.

    ``timeout_s`` bounds connecting and waiting for each response; ``retries`` is how
    many times pymodbus re-sends a request that got no answer (0 = just once).
    Use the device id per request: ``client.read_holding_registers(0, count=2, device_id=3)``.

    >>> c = make_client("modbus-tcp://127.0.0.1:1502", 0.25)
    >>> type(c).__name__, c.comm_params.port, c.comm_params.timeout_connect
    ('ModbusTcpClient', 1502, 0.25)
    """
    u = url if isinstance(url, ModbusURL) else parse_modbus_url(url)
    if timeout_s <= 0:
        raise ConfigError(f"{u.scheme}://{u.target}: timeout {timeout_s} s must be positive")
    if u.scheme == "modbus-tcp":
        return ModbusTcpClient(
            u.host, port=u.port, timeout=timeout_s, retries=retries,
            reconnect_delay=0.1, reconnect_delay_max=5.0,
        )
    return ModbusSerialClient(
        u.device, baudrate=u.baud, parity=u.parity, stopbits=u.stopbits,
        bytesize=u.bytesize, timeout=timeout_s, retries=retries,
        reconnect_delay=0.1, reconnect_delay_max=5.0,
    )


def describe_error(exc: BaseException) -> str:
    """pymodbus's long exception texts, cut to what a person needs.

    >>> from pymodbus.exceptions import ModbusIOException
    >>> describe_error(ModbusIOException("No response received after 1 retries, continue"))
    'no response'
    """
    text = str(exc)
    for needle, short in (
        ("unexpectedly closed", "connection closed by the other end"),
        ("No response received", "no response"),
        ("Failed to connect", "cannot connect"),
        ("cannot connect", "cannot connect"),
    ):
        if needle in text:
            return short
    text = text.replace("Modbus Error: ", "").strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__
