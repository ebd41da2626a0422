"""The control server is bounded: a real gateway process, real sockets on 127.0.0.1.

A negative or huge ``Content-Length`` is refused before the body is read (and a client
streaming megabytes after it does not grow the gateway's memory), idle connections do
not add threads nor stop ``/status`` from answering, a slowloris client gets 408 and is
closed, and oversized headers get 431. Memory and threads are read from
``/proc/<pid>/status`` of the gateway (``VmHWM``: its peak resident set; ``Threads``).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from support.procs import start_gateway, write_config
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

BODY = '''
[source]
url = "sim://pump?rate=8000&seed=5"
[[limits]]
channel = "ax"
above = 1000.0
[[trip]]
kind = "command"
argv = ["/bin/true"]
'''


def proc_status(pid: int, key: str) -> int:
    """A number from /proc/<pid>/status (``VmHWM`` in kB, ``Threads``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.fixture
def gw(tmp_path, procs):
    cfg = write_config(tmp_path, BODY)
    g = start_gateway(cfg)
    procs.append(g)
    g.port = json.loads((tmp_path / "state" / "gateway.json").read_text())["port"]
    return g


def ask(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send ``raw`` and read the answer to EOF (at most ``timeout`` s of silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        out = b""
        while b := s.recv(65536):
            out += b
        return out


def code(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


def status_code(port: int) -> int:
    try:
        return code(ask(port, b"GET /status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"))
    except OSError:
        return 0


def test_a_negative_or_huge_content_length_is_refused_before_the_body(gw):
    # Old code: min(-1, 64 KiB) read to EOF: no answer until its 10 s timeout.
    for length, want in (("-1", 400), ("10" + "0" * 12, 413), ("1e3", 400), ("+5", 400)):
        a = ask(gw.port, b"POST /reset HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: "
                + length.encode() + b"\r\n\r\n")
        assert code(a) == want, (length, a)


def test_megabytes_after_a_negative_content_length_do_not_grow_memory(gw):
    before = proc_status(gw.p.pid, "VmHWM")
    chunk = b"x" * (1 << 20)
    sent = 0
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"POST /reset HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n")
        try:
            for _ in range(64):
                s.sendall(chunk)
                sent += len(chunk)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except OSError:  # the gateway answered 400 and closed: the rest was never read
            pass
    after = proc_status(gw.p.pid, "VmHWM")
    print(f"\n[control] sent {sent >> 20} MiB after Content-Length: -1; gateway VmHWM "
          f"{before / 1024:.1f} -> {after / 1024:.1f} MiB")
    assert after - before < 16 * 1024  # kB; old code: grows by about twice what was sent
    assert status_code(gw.port) == 200


def test_idle_connections_add_no_thread_and_status_still_answers(gw):
    threads = proc_status(gw.p.pid, "Threads")
    idle = []
    try:
        for _ in range(100):
            idle.append(socket.create_connection(("127.0.0.1", gw.port), timeout=5))
        held = proc_status(gw.p.pid, "Threads")
        t0 = time.monotonic()
        wait_until(lambda: status_code(gw.port) == 200, 15, "/status to answer")
        waited = time.monotonic() - t0
    finally:
        for s in idle:
            s.close()
    print(f"\n[control] 100 idle connections: gateway threads {threads} -> {held}; "
          f"/status answered after {waited:.2f} s")
    assert held <= threads + 1  # old code: one thread per connection, +100


def test_a_slowloris_client_gets_408_and_is_closed(gw):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=0.25) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        t0, answer = time.monotonic(), b""
        while time.monotonic() - t0 < 15:
            try:
                s.sendall(b"a")
                b = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not b:
                break
            answer += b
    closed_after = time.monotonic() - t0
    print(f"\n[control] slowloris answered {code(answer)} and closed after {closed_after:.2f} s")
    assert code(answer) == 408 and closed_after < 15


def test_headers_over_8_kib_get_431(gw):
    many = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"y" * 60) for i in range(200))
    a = ask(gw.port, b"GET /status HTTP/1.0\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")
    assert code(a) == 431
    assert code(ask(gw.port, b"GET /status HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                    + b"X-Big: " + b"z" * 9000)) == 431  # no end of head in sight
