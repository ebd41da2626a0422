"""A TCP fault proxy on 127.0.0.1 for the link tests: what a flaky network does to a
Modbus device or an S3 endpoint, on demand.

``FaultProxy(upstream_port)`` listens on ``127.0.0.1:<port>`` and relays every
connection to ``127.0.0.1:upstream_port``, one thread per direction. Faults, changeable
while it runs:

- :meth:`cut` closes every open connection (a PLC or a NAT dropping an idle link);
- ``cut_share=p`` cuts that share of new connections after a random number of bytes
  (``cut_bytes``), in one random direction (a link dropping mid-body);
- ``mode="refuse"`` closes new connections at once (the server is down);
- ``mode="blackhole"`` accepts and holds new connections but relays nothing (a device
  that stopped answering); :meth:`cut` ends the held ones;
- ``http_error=(status, share)`` answers that share of new connections with an HTTP
  error response and closes them (an S3 endpoint answering 500 or 503).

Counters (``connections``, ``cuts``, ``refused``, ``held``, ``http_errors``) let a test
check that the fault really happened. Only ever binds and connects to 127.0.0.1.
"""

from __future__ import annotations

import random
import socket
import threading

__all__ = ["FaultProxy"]

_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


class FaultProxy:
    def __init__(self, upstream_port: int, *, seed: int = 0, cut_share: float = 0.0,
                 cut_bytes: tuple[int, int] = (200, 300_000)) -> None:
        self.upstream = ("127.0.0.1", int(upstream_port))
        self.rng = random.Random(seed)
        self.cut_share = cut_share
        self.cut_bytes = cut_bytes
        self.mode = "relay"  # or "refuse", "blackhole"
        self.http_error: tuple[int, float] | None = None
        self.connections = self.cuts = self.refused = self.held = self.http_errors = 0
        self._lock = threading.Lock()
        self._accepted = threading.Condition(self._lock)
        self._open: set[socket.socket] = set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept, name="faultproxy", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ faults
    def cut(self) -> int:
        """Close every open connection (both ends); returns how many sockets it closed."""
        with self._lock:
            socks, self._open = list(self._open), set()
            if socks:
                self.cuts += 1
        for s in socks:
            _close(s)
        return len(socks)

    def wait_connections(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Block until ``n`` connections were accepted since the start (False on timeout)."""
        with self._accepted:
            return self._accepted.wait_for(lambda: self.connections >= n, timeout)

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.cut()
        self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ relay
    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            try:
                self._handle(c)
            finally:
                with self._lock:
                    self.connections += 1  # counted once it is relayed, held or refused
                    self._accepted.notify_all()

    def _handle(self, c: socket.socket) -> None:
        with self._lock:
            mode, err = self.mode, self.http_error
            r_err, r_cut, r_dir = self.rng.random(), self.rng.random(), self.rng.random()
            cut_at = self.rng.randint(*self.cut_bytes)
        if mode == "refuse":
            self._count("refused")
            _close(c)
            return
        if err is not None and r_err < err[1]:
            self._count("http_errors")
            threading.Thread(target=self._answer_error, args=(c, err[0]), daemon=True).start()
            return
        if mode == "blackhole":
            self._count("held")
            with self._lock:
                self._open.add(c)
            return
        try:
            u = socket.create_connection(self.upstream, timeout=5)
            u.settimeout(None)
        except OSError:
            self._count("refused")
            _close(c)
            return
        with self._lock:
            self._open.update((c, u))
        cut = cut_at if r_cut < self.cut_share else None
        down = r_dir < 0.5
        threading.Thread(target=self._pump, args=(c, u, None if down else cut),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(u, c, cut if down else None),
                         daemon=True).start()

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def _pump(self, a: socket.socket, b: socket.socket, cut: int | None) -> None:
        n = 0
        try:
            while data := a.recv(65536):
                if cut is not None and n + len(data) >= cut:
                    b.sendall(data[:cut - n])
                    self._count("cuts")
                    break
                b.sendall(data)
                n += len(data)
        except OSError:
            pass
        with self._lock:
            self._open.discard(a)
            self._open.discard(b)
        _close(a)
        _close(b)

    def _answer_error(self, c: socket.socket, status: int) -> None:
        """Read the request head, answer ``status`` with a small XML body, close."""
        try:
            c.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = c.recv(65536)
                if not chunk:
                    break
                head += chunk
            body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>"
                    f"{'SlowDown' if status == 503 else 'InternalError'}</Code><Message>"
                    f"injected by FaultProxy</Message></Error>").encode()
            c.sendall(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                      f"Content-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
                      f"Connection: close\r\n\r\n".encode() + body)
        except OSError:
            pass
        _close(c)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
