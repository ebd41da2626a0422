"""The control server's HTTP/1.0 codec: pure functions over bytes, no I/O.

:func:`parse_head` reads a request line and its headers from the bytes received so far:
``None`` means "need more bytes"; a :class:`Head` says how long the head was and how many
body bytes follow (``Content-Length``, checked before a single body byte is read); any
request that must be refused raises :class:`HttpError` with the status to answer.

>>> h = parse_head(b"GET /status HTTP/1.1\\r\\nHost: 127.0.0.1:9108\\r\\n\\r\\n")
>>> h.method, h.path, h.host, h.length, h.size
('GET', '/status', '127.0.0.1', 0, 46)
>>> parse_head(b"GET /status HTTP/1.1\\r\\nHo") is None
True
>>> parse_head(b"POST /reset HTTP/1.0\\r\\nContent-Length: -1\\r\\n\\r\\n")
Traceback (most recent call last):
...
sensorml.gateway.httpwire.HttpError: 400 Content-Length '-1' is not a byte count
>>> render(200, "text/plain", b"ok")[:17]
b'HTTP/1.0 200 OK\\r\\n'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sensorml.errors import SensormlError

#: request line + headers, in bytes; more is answered 431
MAX_HEAD = 8 * 1024
#: a request body, in bytes; a larger Content-Length is answered 413 before reading it
MAX_BODY = 64 * 1024

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           409: "Conflict", 411: "Length Required", 413: "Content Too Large",
           421: "Misdirected Request", 429: "Too Many Requests",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable"}

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_TARGET = re.compile(rb"/[\x21-\x7e]*")


class HttpError(SensormlError):
    """A request the server refuses: ``code`` is the HTTP status to answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Head:
    """A parsed request line and headers (names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    #: bytes of the head, the blank line included
    size: int
    #: body bytes that follow (Content-Length, 0 without one)
    length: int

    @property
    def host(self) -> str | None:
        """The Host header without its port, lower-cased (``[::1]`` keeps its brackets)."""
        h = self.headers.get("host")
        if h is None:
            return None
        h = h.strip().lower()
        if h.startswith("["):
            return h[:h.find("]") + 1] if "]" in h else h
        return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _end_of_head(data: bytes) -> tuple[int, int]:
    """(index of the blank line, its length), or (-1, 0) if not received yet."""
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 4
    return (lf, 2) if lf >= 0 else (-1, 0)


def parse_head(data: bytes, *, max_head: int = MAX_HEAD, max_body: int = MAX_BODY) -> Head | None:
    """The head of the request at the start of ``data``, or None until it is complete."""
    end, sep = _end_of_head(data)
    if end < 0:
        if len(data) > max_head:
            raise HttpError(431, f"request line and headers exceed {max_head} bytes")
        return None
    if end + sep > max_head:
        raise HttpError(431, f"request line and headers exceed {max_head} bytes")
    lines = data[:end].replace(b"\r\n", b"\n").split(b"\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[2].startswith(b"HTTP/1."):
        raise HttpError(400, "bad request line (expected: METHOD /path HTTP/1.x)")
    if not _TARGET.fullmatch(parts[1]):
        raise HttpError(400, "bad request target (expected a path starting with /)")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, "bad header line")
        key = name.decode("ascii").lower()
        if key in headers and key in ("host", "content-length", "authorization"):
            raise HttpError(400, f"more than one {key} header")
        headers[key] = value.strip(b" \t").decode("latin-1")
    if "transfer-encoding" in headers:
        raise HttpError(501, "Transfer-Encoding is not supported: send Content-Length")
    length = 0
    if "content-length" in headers:
        raw = headers["content-length"].encode("latin-1")
        if not _DIGITS.fullmatch(raw):
            raise HttpError(400, f"Content-Length {headers['content-length']!r} is not a byte count")
        length = int(raw)
        if length > max_body:
            raise HttpError(413, f"body of {length} bytes exceeds {max_body}")
    method = parts[0].decode("ascii")
    if method == "POST" and "content-length" not in headers:
        raise HttpError(411, "a POST needs a Content-Length")
    return Head(method, parts[1].decode("ascii").split("?", 1)[0], headers, end + sep, length)


def render(code: int, ctype: str, body: bytes, extra: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.0 response that closes the connection."""
    more = "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items())
    return (f"HTTP/1.0 {code} {REASONS.get(code, 'Status')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{more}Connection: close\r\n\r\n").encode() + body


def parse_response(data: bytes) -> tuple[int, bytes]:
    """(status, body) of a whole response read to EOF (the client side).

    >>> parse_response(render(409, "application/json", b'{"ok": false}'))
    (409, b'{"ok": false}')
    """
    end, sep = _end_of_head(data)
    if end < 0 or not data.startswith(b"HTTP/1."):
        raise HttpError(502, "not an HTTP response")
    try:
        code = int(data[:end].split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise HttpError(502, "not an HTTP response") from None
    return code, data[end + sep:]
