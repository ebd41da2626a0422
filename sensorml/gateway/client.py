"""Talking to a running gateway from another process (``sensorml status``, ``sensorml
reset``, the sync heartbeat, the redeploy step): one HTTP/1.0 request per connection,
written and read with :mod:`sensorml.gateway.httpwire` (no ``urllib``/``http.client``).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from sensorml.errors import SensormlError
from sensorml.gateway.httpwire import HttpError, parse_response

#: bytes of an answer read at most (``/metrics`` of a big gateway is a few hundred KB)
MAX_ANSWER = 16 * 1024 * 1024


def gateway_address(state_dir: Path) -> tuple[str, int]:
    """Where the running gateway of this state dir listens; one-line error if none runs."""
    f = state_dir / "gateway.json"
    try:
        info = json.loads(f.read_text())
    except FileNotFoundError:
        raise SensormlError(f"no gateway is running for {state_dir} ({f} not found)") from None
    except PermissionError:
        raise SensormlError(f"permission denied on {f}") from None
    return info["host"], int(info["port"])


def exchange(sock: socket.socket, method: str, path: str, body: dict | None,
             host: str, timeout: float) -> tuple[int, dict]:
    """Send one request on a connected socket; (status, JSON answer)."""
    data = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.0\r\nHost: {host}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    sock.settimeout(timeout)
    sock.sendall(head.encode() + b"\r\n" + data)
    chunks, n = [], 0
    while n <= MAX_ANSWER:
        b = sock.recv(65536)
        if not b:
            break
        chunks.append(b)
        n += len(b)
    code, raw = parse_response(b"".join(chunks))
    try:
        return code, json.loads(raw)
    except ValueError:
        raise HttpError(502, f"answer {code} is not JSON") from None


def call(state_dir: Path, path: str, body: dict | None = None, timeout: float = 5.0) -> dict:
    """GET ``path`` (POST with ``body``) on the gateway's HTTP port; the JSON answer."""
    host, port = gateway_address(state_dir)
    name = f"[{host}]" if ":" in host else host
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            return exchange(s, "GET" if body is None else "POST", path, body,
                            f"{name}:{port}", timeout)[1]
    except (OSError, HttpError) as e:
        raise SensormlError(f"gateway at {host}:{port} does not answer ({e}); "
                            "is it running?") from None
