"""The gateway's control server: one thread with a :mod:`selectors` loop for every
listener and connection, plus one thread that runs commands (a reset talks to the
actuators and may take seconds; reads never wait for it).

Everything is bounded, so no client can grow the gateway's memory or thread count, or
hold a connection open (the trip path must never run out of threads because of it):

- at most ``cap`` connections per listener; one more is answered 503 and closed at once;
- the request line and headers together at most :data:`~sensorml.gateway.httpwire.MAX_HEAD`
  bytes (431), a body only with a ``Content-Length`` of at most
  :data:`~sensorml.gateway.httpwire.MAX_BODY` (400/411/413 before a byte of it is read);
- the whole request within ``request_timeout`` (2 s) of the connection, or 408 and closed
  (a slowloris client); the answer is written within ``write_timeout`` or dropped;
- at most :data:`MAX_JOBS` commands waiting for the command thread (503 beyond).

What each listener serves and who may use it is its :class:`Endpoint`
(:mod:`sensorml.gateway.routes`). HTTP/1.0, one request per connection; this is not
``http.server``, which would pull in ``http.client``, ``email`` and ``ssl``: ~7 MB a
gateway does not need for a few local routes.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sensorml.gateway.httpwire import Head, HttpError, parse_head, render

log = logging.getLogger("sensorml.gateway.control")

#: commands waiting for the command thread; more are answered 503
MAX_JOBS = 4
_LINGER_S = 1.0  # after the answer: read and drop what the client still sends, then close
_READ, _WAIT, _WRITE, _LINGER = range(4)


@dataclass(frozen=True)
class Peer:
    """Who is on the other end: a TCP address, or a unix socket peer's kernel-given ids."""

    address: str
    uid: int | None = None
    pid: int | None = None

    @property
    def who(self) -> str:
        """``user jsmith (uid 1001)`` for a socket peer (the kernel's word, not a claim)."""
        if self.uid is None:
            return self.address
        import pwd

        try:
            name = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return f"uid {self.uid}"
        return f"user {name} (uid {self.uid})"


@dataclass(frozen=True)
class Reply:
    code: int
    body: bytes
    ctype: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def wire(self) -> bytes:
        return render(self.code, self.ctype, self.body, self.headers)


def json_reply(code: int, obj: object, headers: dict[str, str] | None = None) -> Reply:
    return Reply(code, json.dumps(obj, default=str).encode(), headers=headers or {})


def error_reply(code: int, message: str) -> Reply:
    return json_reply(code, {"ok": False, "error": message})


@dataclass(frozen=True)
class Job:
    """Work for the command thread; ``run`` returns the reply."""

    run: Callable[[], Reply]


class Endpoint(Protocol):
    """What one listener serves. ``check`` sees the head before the body is read (refuse
    early: a wrong method, host or token); ``handle`` answers, or returns a :class:`Job`."""

    name: str
    cap: int

    def check(self, head: Head, peer: Peer) -> Reply | None: ...

    def handle(self, head: Head, body: bytes, peer: Peer) -> Reply | Job: ...


class _Conn:
    __slots__ = ("sock", "ep", "peer", "inbuf", "head", "out", "state", "deadline")

    def __init__(self, sock: socket.socket, ep: Endpoint, peer: Peer, deadline: float) -> None:
        self.sock, self.ep, self.peer = sock, ep, peer
        self.inbuf = bytearray()
        self.head: Head | None = None
        self.out = b""
        self.state = _READ
        self.deadline = deadline


class ControlServer:
    """Listeners added with :meth:`listen`, served by :meth:`start` until :meth:`stop`."""

    def __init__(self, *, request_timeout: float = 2.0, write_timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.request_timeout, self.write_timeout, self.clock = request_timeout, write_timeout, clock
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._listeners: list[tuple[socket.socket, Endpoint]] = []
        self._conns: dict[socket.socket, _Conn] = {}
        self._count: dict[str, int] = {}
        self._jobs: queue.Queue = queue.Queue(maxsize=MAX_JOBS)
        self._done: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._loop = threading.Thread(target=self._serve, name="control", daemon=True)
        self._worker = threading.Thread(target=self._work, name="control-cmd", daemon=True)
        self.refused = 0  # connections closed at once over a cap (for the status)

    # ------------------------------------------------------------------ set-up
    def listen(self, sock: socket.socket, endpoint: Endpoint) -> None:
        """Serve ``endpoint`` on ``sock`` (bound and listening)."""
        sock.setblocking(False)
        self._listeners.append((sock, endpoint))
        self._count[endpoint.name] = 0
        self._sel.register(sock, selectors.EVENT_READ, endpoint)

    def start(self) -> None:
        self._worker.start()
        self._loop.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        try:
            self._jobs.put_nowait(None)
        except queue.Full:
            pass
        if self._loop.is_alive():
            self._loop.join(5)
        for c in list(self._conns.values()):
            self._close(c)
        for s, _ in self._listeners:
            s.close()
        self._wake_r.close()
        self._wake_w.close()
        self._sel.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # a wake is pending already, or we are closing

    # -------------------------------------------------------------- the loop
    def _serve(self) -> None:
        while not self._stopping.is_set():
            now = self.clock()
            waits = [c.deadline - now for c in self._conns.values() if c.state != _WAIT]
            try:
                events = self._sel.select(max(0.0, min(waits, default=1.0)))
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            for key, _mask in events:
                try:
                    if key.fileobj is self._wake_r:
                        self._drain_wake()
                    elif key.fileobj in self._conns:
                        self._on_ready(self._conns[key.fileobj])
                    else:
                        self._accept(key.fileobj, key.data)
                except Exception:  # noqa: BLE001 - one bad connection never stops the loop
                    log.exception("control server")
                    if key.fileobj in self._conns:
                        self._close(self._conns[key.fileobj])
            self._expire(self.clock())

    def _accept(self, lsock: socket.socket, ep: Endpoint) -> None:
        for _ in range(64):
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of file descriptors: say so, keep serving the rest
                log.error("control %s: accept failed: %s", ep.name, e)
                return
            if self._count[ep.name] >= ep.cap:
                self.refused += 1
                try:
                    sock.send(error_reply(503, f"too many connections (at most {ep.cap})").wire(),
                              socket.MSG_DONTWAIT)
                except OSError:
                    pass
                sock.close()
                continue
            sock.setblocking(False)
            peer = _peer(sock, addr)
            c = _Conn(sock, ep, peer, self.clock() + self.request_timeout)
            self._conns[sock] = c
            self._count[ep.name] += 1
            self._sel.register(sock, selectors.EVENT_READ, ep)

    def _on_ready(self, c: _Conn) -> None:
        if c.state == _WRITE:
            return self._write(c)
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return self._close(c)
        if not data:
            return self._close(c)
        if c.state == _LINGER:
            return None  # dropped: the answer has gone already
        c.inbuf += data
        try:
            if c.head is None:
                c.head = parse_head(bytes(c.inbuf))
                if c.head is None:
                    return None
                early = c.ep.check(c.head, c.peer)
                if early is not None:
                    return self._answer(c, early)
            if len(c.inbuf) < c.head.size + c.head.length:
                return None
        except HttpError as e:
            return self._answer(c, error_reply(e.code, e.message))
        body = bytes(c.inbuf[c.head.size:c.head.size + c.head.length])
        try:
            r = c.ep.handle(c.head, body, c.peer)
        except Exception:  # noqa: BLE001 - answer 500, keep serving
            log.exception("control %s: %s %s", c.ep.name, c.head.method, c.head.path)
            r = error_reply(500, "internal error (see the gateway's log)")
        if isinstance(r, Job):
            try:
                self._jobs.put_nowait((c, r))
            except queue.Full:
                return self._answer(c, error_reply(503, "busy: a command is running"))
            c.state = _WAIT  # nothing more is read from it until the answer
            self._sel.unregister(c.sock)
            return None
        return self._answer(c, r)

    def _answer(self, c: _Conn, r: Reply) -> None:
        c.out, c.state = r.wire(), _WRITE
        c.inbuf = bytearray()
        c.deadline = self.clock() + self.write_timeout
        try:
            self._sel.modify(c.sock, selectors.EVENT_WRITE, c.ep)
        except KeyError:  # it waited for a command, unregistered
            self._sel.register(c.sock, selectors.EVENT_WRITE, c.ep)
        self._write(c)

    def _write(self, c: _Conn) -> None:
        try:
            n = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._close(c)
        c.out = c.out[n:]
        if c.out:
            return
        try:
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return self._close(c)
        c.state, c.deadline = _LINGER, self.clock() + _LINGER_S
        self._sel.modify(c.sock, selectors.EVENT_READ, c.ep)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                c, r = self._done.get_nowait()
            except queue.Empty:
                return
            if c.sock in self._conns:
                self._answer(c, r)

    def _expire(self, now: float) -> None:
        for c in list(self._conns.values()):
            if c.state == _WAIT or c.deadline > now:
                continue
            if c.state == _READ:
                self._answer(c, error_reply(
                    408, f"request not complete within {self.request_timeout:g} s"))
            else:
                self._close(c)

    def _close(self, c: _Conn) -> None:
        if self._conns.pop(c.sock, None) is None:
            return
        self._count[c.ep.name] -= 1
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    # ---------------------------------------------------------- the commands
    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None or self._stopping.is_set():
                return
            c, job = item
            try:
                r = job.run()
            except Exception:  # noqa: BLE001 - answer 500, keep the thread
                log.exception("control command %s %s", c.head.method, c.head.path)
                r = error_reply(500, "internal error (see the gateway's log)")
            self._done.put((c, r))
            self._wake()

    @property
    def port(self) -> int | None:
        """The port of the first TCP listener (the HTTP one), None without one."""
        for s, _ in self._listeners:
            if s.family in (socket.AF_INET, socket.AF_INET6):
                return s.getsockname()[1]
        return None

    def connections(self) -> dict[str, int]:
        """Open connections per listener (read from other threads; a snapshot)."""
        return dict(self._count)


def _peer(sock: socket.socket, addr) -> Peer:
    if sock.family == socket.AF_UNIX:
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        return Peer("unix", uid=uid, pid=pid)
    host, port = addr[0], addr[1]
    return Peer(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


def tcp_listener(host: str, port: int, key: str) -> socket.socket:
    """A listening TCP socket on ``host:port``; a one-line error naming ``key`` if taken."""
    from sensorml.errors import SensormlError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        s = socket.socket(family, socket.SOCK_STREAM)
    except (OSError, IndexError) as e:
        raise SensormlError(f"{key}: cannot listen on {host}:{port} ({e})") from None
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        s.listen(64)
    except OSError as e:
        s.close()
        raise SensormlError(
            f"{key}: cannot listen on {host}:{port} ({e.strerror or e}); "
            "is another gateway running? use another port or 0") from None
    os.set_inheritable(s.fileno(), False)
    return s
