"""Talking to a running gateway from another process: one HTTP/1.0 request per
connection, written and read with :mod:`sensorml.gateway.httpwire` (no ``urllib``).

- :func:`call` reads over the HTTP port (``GET /status``: the sync heartbeat, and
  ``sensorml status`` for a user who may not open the socket);
- :func:`command` changes state over the unix control socket (``POST /reset``, ``POST
  /reload``: ``sensorml reset``, the redeploy step; ``GET /status``: ``sensorml status``,
  which works for an operator even when the state folder is closed to them). The socket's file permissions say
  who may; the gateway records who did from the kernel (``SO_PEERCRED``).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def unix_name(path: Path) -> Iterator[str]:
    """A name for ``path`` that fits a unix socket address (at most 107 bytes): the path
    itself, or ``/proc/self/fd/<its folder>/<name>`` for a deep one."""
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _no_access(path: Path, e: OSError) -> SensormlError:
    if isinstance(e, PermissionError):
        import grp

        try:
            group = grp.getgrgid(os.stat(path).st_gid).gr_name
        except (OSError, KeyError):
            from sensorml.config import OPERATORS_GROUP

            group = OPERATORS_GROUP
        return SensormlError(f"permission denied on {path}: add your user to group {group} "
                             "(then log in again)")
    if isinstance(e, FileNotFoundError | ConnectionRefusedError):
        return SensormlError(f"no gateway listens on {path} ({e.strerror}); is it running?")
    return SensormlError(f"gateway at {path} does not answer ({e})")


def command(socket_path: Path, path: str, body: dict | None = None,
            timeout: float = 30.0, method: str = "POST") -> dict:
    """POST ``body`` (or GET) ``path`` over the control socket; the gateway's JSON answer.
    A missing socket or one this user may not open is a one-line :class:`SensormlError`;
    an answer the gateway gave (refused or not) is returned as it is."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, \
                unix_name(socket_path) as name:
            s.settimeout(timeout)
            s.connect(name)
            code, answer = exchange(s, method, path, (body or {}) if method == "POST" else None,
                                    "localhost", timeout)
    except HttpError as e:
        raise SensormlError(f"gateway at {socket_path}: {e.message}") from None
    except OSError as e:
        raise _no_access(socket_path, e) from None
    if code >= 400 and "refused" not in answer:
        raise SensormlError(f"gateway at {socket_path}: {answer.get('error', code)}")
    return answer
