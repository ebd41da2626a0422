"""Only the right people lift a trip: a real gateway process that trips on a hard limit
(the simulated pump's ``spikes`` fault passes ``ax > 4``), real sockets, real users.

- HTTP is read-only: ``POST /reset`` and ``/reload`` are 405, a browser-style request
  (``Origin: https://evil.example``, ``text/plain``) cannot reset, a Host outside the
  allow-list is 421 (DNS rebinding), no answer carries CORS headers;
- ``sensorml reset`` goes over the unix socket and the reset event names the user the
  kernel reports (``SO_PEERCRED``); another user (uid 65534 via ``setpriv``: the
  tests run as root here) is refused by the socket's file mode, and is let
  in once it is in the socket's group;
- the remote-reset listener takes the token of a 0600 file only, and is not started for a
  file others can read.

The gateway's state lives in a folder under /tmp made 0755 for the test (pytest's own
``tmp_path`` is 0700, which would keep uid 65534 from reading the config at all).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support.procs import log_json, start_gateway, write_config
from support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

TRIPPING = '''
[source]
url = "sim://pump?rate=8000&seed=5&faults=spikes@0.5s"
[[limits]]
channel = "ax"
above = 4.0
[[trip]]
kind = "command"
argv = ["/bin/true"]
'''
#: a limit every sample breaches: the trip's cause never goes away
STAYS_BREACHED = TRIPPING.replace("above = 4.0", "below = 1000.0")
NOBODY = 65534


@pytest.fixture
def home():
    """A folder another user can read (the config) and traverse (to the socket)."""
    d = Path(tempfile.mkdtemp(prefix="sml-ctl-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def tripped_gateway(home: Path, procs, extra: str = "", body: str = TRIPPING):
    cfg = write_config(home, body + extra)
    gw = start_gateway(cfg)
    procs.append(gw)
    log_json(gw, lambda m: m.startswith("TRIP"), 30, "trip")
    gw.port = json.loads((home / "state" / "gateway.json").read_text())["port"]
    gw.cfg = cfg
    return gw


def ask(port: int, raw: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        out = b""
        while b := s.recv(65536):
            out += b
    return int(out.split(b" ", 2)[1]), out


def post(path: str, body: bytes, *headers: str, host: str = "127.0.0.1") -> bytes:
    more = "".join(h + "\r\n" for h in headers)
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{more}Content-Length: {len(body)}"
            "\r\n\r\n").encode() + body


def status(gw) -> dict:
    _, out = ask(gw.port, b"GET /status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    return json.loads(out.split(b"\r\n\r\n", 1)[1])


def resets(home: Path) -> list[dict]:
    db = sqlite3.connect(f"file:{home / 'state' / 'buffer.db'}?mode=ro", uri=True, timeout=5)
    try:
        return [json.loads(d) for (d,) in db.execute(
            "SELECT detail FROM events WHERE kind = 'reset' ORDER BY id")]
    finally:
        db.close()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensorml.cli", *args], capture_output=True,
                          text=True, timeout=60)


def as_nobody(*args: str, groups: tuple[int, ...] = ()) -> subprocess.CompletedProcess:
    """``sensorml ARGS`` as uid/gid 65534 (``setpriv``), in ``groups`` besides."""
    ids = ["--reuid", str(NOBODY), "--regid", str(NOBODY)]
    ids += ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", *ids, sys.executable, "-m", "sensorml.cli", *args],
                          capture_output=True, text=True, timeout=60)


def me() -> str:
    return f"user {pwd.getpwuid(os.getuid()).pw_name} (uid {os.getuid()})"


def test_http_cannot_reset_or_reload_and_a_browser_page_cannot_either(home, procs):
    gw = tripped_gateway(home, procs)
    code, out = ask(gw.port, post("/reset", b'{"by": "operator J.Smith (badge 4411)"}'))
    assert code == 405 and b"sensorml reset" in out
    assert ask(gw.port, post("/reload", b"{}"))[0] == 405
    code, out = ask(gw.port, post("/reset", b'{"by": "x"}', "Origin: https://evil.example",
                                  "Content-Type: text/plain"))
    assert code in (403, 405) and b"access-control" not in out.lower()
    assert ask(gw.port, post("/reset", b"{}", host="evil.example:9108"))[0] == 421
    assert status(gw)["tripped"] is True and resets(home) == []


def test_a_host_outside_the_allow_list_is_421(home, procs):
    gw = tripped_gateway(home, procs)
    get = "GET /status HTTP/1.1\r\nHost: {}\r\n\r\n"
    for host, want in (("evil.example", 421), (f"evil.example:{gw.port}", 421),
                       ("127.0.0.1.nip.io", 421), (f"127.0.0.1:{gw.port}", 200),
                       (f"localhost:{gw.port}", 200), ("[::1]", 200)):
        code, out = ask(gw.port, get.format(host).encode())
        assert code == want, (host, out)
        assert b"access-control" not in out.lower()
    code, _ = ask(gw.port, (f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n"
                            "Origin: https://evil.example\r\n\r\n").encode())
    assert code == 403


def test_the_allowed_hosts_key_adds_a_scrapers_name(tmp_path, procs):
    cfg = write_config(tmp_path, TRIPPING.replace("&faults=spikes@0.5s", ""))
    cfg.write_text(cfg.read_text().replace("[metrics]\nport = 0\n",
                                           '[metrics]\nport = 0\nallowed_hosts = ["GW-07.plant"]\n'))
    gw = start_gateway(cfg)
    procs.append(gw)
    port = json.loads((tmp_path / "state" / "gateway.json").read_text())["port"]
    assert ask(port, f"GET /metrics HTTP/1.1\r\nHost: gw-07.plant:{port}\r\n\r\n".encode())[0] == 200
    assert ask(port, b"GET /metrics HTTP/1.1\r\nHost: gw-08.plant\r\n\r\n")[0] == 421


def test_a_reset_over_the_socket_records_the_real_user_and_the_note(home, procs):
    gw = tripped_gateway(home, procs)
    sock = home / "state" / "control.sock"
    assert (sock.stat().st_mode & 0o777) == 0o660
    flood = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(100)]
    try:  # idle connections filling the HTTP port's cap do not keep a reset out
        r = cli("reset", "--config", str(gw.cfg), "--force", "--note", "bearing replaced")
    finally:
        for s in flood:
            s.close()
    assert r.returncode == 0, r.stderr
    ev = wait_until(lambda: resets(home), 10, "the reset event")[0]
    assert ev["by"] == me() and ev["note"] == "bearing replaced"


def test_a_refused_reset_prints_one_line_and_exits_1(home, procs):
    gw = tripped_gateway(home, procs, body=STAYS_BREACHED)  # the cause is still present
    r = cli("reset", "--config", str(gw.cfg))
    assert r.returncode == 1 and r.stdout.startswith("reset refused: the trip's cause"), r
    assert len(r.stdout.strip().splitlines()) == 1 and not r.stderr
    assert status(gw)["tripped"] is True


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run a command as another user")
def test_another_user_is_refused_by_the_sockets_mode_until_it_is_in_its_group(home, procs):
    gw = tripped_gateway(home, procs)
    sock = home / "state" / "control.sock"
    r = as_nobody("reset", "--config", str(gw.cfg), "--force")
    assert r.returncode == 2, r
    line = r.stderr.strip()
    assert line.startswith(f"sensorml reset: error: permission denied on {sock}: add your "
                           "user to group ")
    assert len(line.splitlines()) == 1 and status(gw)["tripped"] is True
    # in the socket's group, the same user may; the event names it, not the caller's claim
    r = as_nobody("reset", "--config", str(gw.cfg), "--force", "--note", "as nobody",
                  groups=(sock.stat().st_gid,))
    assert r.returncode == 0, r
    ev = wait_until(lambda: resets(home), 10, "the reset event")[0]
    assert ev["by"] == f"user nobody (uid {NOBODY})" and ev["note"] == "as nobody"


def test_no_gateway_running_is_one_line_and_exit_2(home):
    cfg = write_config(home, TRIPPING)
    r = cli("reset", "--config", str(cfg))
    assert r.returncode == 2 and r.stderr.strip() == (
        f"sensorml reset: error: no gateway listens on {home / 'state' / 'control.sock'} (No such file or directory);"
        " is it running?")


def remote_gateway(home: Path, procs, mode: int):
    token = home / "reset.token"
    token.write_text("s3cret-token-0123456789abcdef\n")
    token.chmod(mode)
    cfg = write_config(home, TRIPPING + f'[control]\nremote_reset = true\nremote_host = '
                                        f'"127.0.0.1"\nremote_port = 0\ntoken_file = "{token}"\n')
    gw = start_gateway(cfg, wait=False)
    procs.append(gw)
    return gw


def test_a_remote_reset_needs_the_token_of_a_0600_file(home, procs):
    gw = remote_gateway(home, procs, 0o600)
    line = log_json(gw, lambda m: m.startswith("remote reset listening"), 30, "remote listener")
    port = int(line["msg"].split()[4].rsplit(":", 1)[1])
    log_json(gw, lambda m: m.startswith("TRIP"), 30, "trip")
    body = b'{"force": true, "note": "from the control room"}'
    assert ask(port, post("/reset", body))[0] == 401
    assert ask(port, post("/reset", body, "Authorization: Bearer s3cret-token-0123456789abcdeX"))[0] == 401
    assert ask(port, b"GET /status HTTP/1.0\r\n\r\n")[0] == 404
    code, out = ask(port, post("/reset", body, "Authorization: Bearer s3cret-token-0123456789abcdef"))
    assert code == 200, out
    ev = wait_until(lambda: resets(home), 10, "the reset event")[0]
    assert ev["by"] == "remote token reset.token" and ev["note"] == "from the control room"


def test_a_token_file_others_can_read_keeps_the_remote_listener_off(home, procs):
    gw = remote_gateway(home, procs, 0o644)
    line = log_json(gw, lambda m: "token_file" in m, 30, "the token file refused")
    assert line["level"] == "error" and "chmod 600" in line["msg"]
    assert "\n" not in line["msg"] and "remote reset listener not started" in line["msg"]
    gw.expect(lambda s: "running" in s, 30, "run on without it")
