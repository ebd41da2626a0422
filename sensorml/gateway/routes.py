"""What the gateway's control listeners serve, and who may use each (SECURITY.md, "Who
can reset"); :mod:`sensorml.gateway.control` is the server and its bounds.

- :class:`HttpEndpoint` on ``[metrics] host:port``: read-only. ``GET /metrics`` and
  ``GET /status`` for a Host on the allow-list (else 421: DNS rebinding) and no foreign
  ``Origin`` (403); no CORS headers; ``/reset`` and ``/reload`` are 405 whatever the method.
- :class:`OperatorEndpoint` on the unix socket (mode 0660, its group): ``POST /reset``
  (``{"force": bool, "note": str}``), ``POST /reload``, ``GET /status``. The reset event
  names the peer's user as the kernel reports it (``SO_PEERCRED``), never a claimed name.
- :class:`RemoteResetEndpoint` (``[control] remote_reset``, off by default): ``POST
  /reset`` with ``Authorization: Bearer <token>`` only, compared in constant time.

:func:`open_control` builds the server a gateway runs.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from sensorml.errors import SensormlError
from sensorml.gateway.control import ControlServer, Job, Peer, Reply, error_reply, json_reply
from sensorml.gateway.httpwire import Head
from sensorml.gateway.listeners import socket_group, tcp_listener, unix_listener

log = logging.getLogger("sensorml.gateway.control")

#: connections each listener holds at once: HTTP (Prometheus, `sensorml status`), the
#: operators' socket (its own cap: a flood on the HTTP port cannot keep a reset out),
#: the remote-reset port
HTTP_CAP, SOCKET_CAP, REMOTE_CAP = 16, 8, 4
NOTE_MAX = 500  # characters of an operator's note

NOT_OVER_HTTP = ("{path} is not served over HTTP: use `sensorml reset` (or `sensorml "
                 "redeploy`) on the gateway host; it talks over the control socket")


def _json_body(body: bytes) -> dict:
    try:
        d = json.loads(body) if body.strip() else {}
    except ValueError:
        raise SensormlError("the body is not JSON") from None
    if not isinstance(d, dict):
        raise SensormlError("the body is not a JSON object")
    return d


def reset_args(body: bytes) -> tuple[bool, str]:
    """(force, note) of a reset request; a one-line error for anything else in it.

    >>> reset_args(b'{"force": true, "note": "bearing replaced"}')
    (True, 'bearing replaced')
    >>> reset_args(b'{"by": "operator J.Smith"}')
    Traceback (most recent call last):
    ...
    sensorml.errors.SensormlError: unknown key 'by' (the gateway records who you are; give force and note only)
    """
    d = _json_body(body)
    for k in d:
        if k not in ("force", "note"):
            raise SensormlError(f"unknown key {k!r} (the gateway records who you are; "
                                "give force and note only)")
    force, note = d.get("force", False), d.get("note", "")
    if not isinstance(force, bool):
        raise SensormlError(f"force: {force!r} is not true or false")
    if not isinstance(note, str) or len(note) > NOTE_MAX:
        raise SensormlError(f"note: a string of at most {NOTE_MAX} characters")
    return force, " ".join(note.split())


def _reset_job(gw, who: Callable[[], str], body: bytes) -> Reply | Job:
    """The reset as a job for the command thread (``who`` too: a user lookup may ask NSS)."""
    try:
        force, note = reset_args(body)
    except SensormlError as e:
        return error_reply(400, str(e))

    def run() -> Reply:
        r = gw.reset(who(), force=force, note=note)
        return json_reply(409 if r.get("refused") else 200, r)

    return Job(run)


def _bracket(host: str) -> str:
    host = host.lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class HttpEndpoint:
    """Read-only HTTP: ``GET /metrics``, ``GET /status`` (see the module's docstring)."""

    name = "http"
    cap = HTTP_CAP
    paths = ("/metrics", "/status")

    def __init__(self, gw, allowed_hosts: set[str]) -> None:
        self.gw = gw
        self.allowed = allowed_hosts

    def check(self, head: Head, peer: Peer) -> Reply | None:
        if head.path not in (*self.paths, "/reset", "/reload"):
            return error_reply(404, f"no such path {head.path}")
        host = head.host
        if host is not None and host not in self.allowed:
            return error_reply(421, f"host {host!r} is not served here (add it to "
                                    "metrics.allowed_hosts)")
        origin = head.headers.get("origin")
        if origin is not None:
            try:
                o = urlsplit(origin).hostname
            except ValueError:
                o = None
            if o is None or _bracket(o) not in self.allowed:
                return error_reply(403, f"cross-origin request from {origin!r} refused")
        if head.path not in self.paths:
            return error_reply(405, NOT_OVER_HTTP.format(path=head.path))
        if head.method != "GET":
            return Reply(405, json.dumps({"ok": False, "error": f"{head.method} {head.path}: "
                                          "only GET"}).encode(), headers={"Allow": "GET"})
        return None

    def handle(self, head: Head, body: bytes, peer: Peer) -> Reply | Job:
        gw = self.gw
        if head.path == "/metrics":
            return Reply(200, gw.metrics.render(gw).encode(), "text/plain; version=0.0.4")
        return json_reply(200, gw.status())


class OperatorEndpoint:
    """The unix control socket: reset, reload, status, for whoever may open it."""

    name = "socket"
    cap = SOCKET_CAP
    routes = {"/reset": "POST", "/reload": "POST", "/status": "GET"}

    def __init__(self, gw) -> None:
        self.gw = gw

    def check(self, head: Head, peer: Peer) -> Reply | None:
        want = self.routes.get(head.path)
        if want is None:
            return error_reply(404, f"no such path {head.path}")
        if head.method != want:
            return error_reply(405, f"{head.method} {head.path}: use {want}")
        return None

    def handle(self, head: Head, body: bytes, peer: Peer) -> Reply | Job:
        if head.path == "/status":
            return json_reply(200, self.gw.status())
        if head.path == "/reload":
            def reload() -> Reply:
                log.info("reload requested by %s", peer.who)
                self.gw.request_reload()
                return json_reply(200, {"ok": True, "detail": "reload requested"})

            return Job(reload)
        return _reset_job(self.gw, lambda: peer.who, body)


class RemoteResetEndpoint:
    """``POST /reset`` with the bearer token of ``token_file``; nothing else."""

    name = "remote"
    cap = REMOTE_CAP

    def __init__(self, gw, token: bytes, label: str) -> None:
        self.gw, self.token, self.label = gw, token, label
        self.bad_tokens = 0

    def check(self, head: Head, peer: Peer) -> Reply | None:
        if head.path != "/reset":
            return error_reply(404, f"no such path {head.path}")
        if head.method != "POST":
            return error_reply(405, f"{head.method} /reset: use POST")
        scheme, _, given = head.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("latin-1"), self.token):
            self.bad_tokens += 1
            if self.bad_tokens in (1, 10) or self.bad_tokens % 100 == 0:
                log.warning("remote reset refused: bad or missing token from %s (%d so far)",
                            peer.address, self.bad_tokens)
            return Reply(401, b'{"ok": false, "error": "a valid bearer token is required"}',
                         headers={"WWW-Authenticate": "Bearer"})
        return None

    def handle(self, head: Head, body: bytes, peer: Peer) -> Reply | Job:
        return _reset_job(self.gw, lambda: f"remote token {self.label}", body)


def read_token(path: Path) -> bytes:
    """The bearer token in ``path``; one-line error unless it is a 0600 (or stricter) file
    holding at least 16 characters."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise SensormlError(f"control.token_file: cannot open {path} ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode & 0o777
        if mode & 0o077:
            raise SensormlError(f"control.token_file: {path} is readable by others (mode "
                                f"{mode:04o}): chmod 600 it")
        token = f.read(4097).strip()
    if len(token) < 16 or len(token) > 4096 or any(c < 0x21 or c > 0x7e for c in token):
        raise SensormlError(f"control.token_file: {path} must hold one token of 16 to 4096 "
                            "printable characters (e.g. `openssl rand -hex 32`)")
    return token


def allowed_hosts(metrics) -> set[str]:
    """The Host values the HTTP listener serves (``[metrics]``)."""
    hosts = {"127.0.0.1", "localhost", "[::1]", *(_bracket(h) for h in metrics.allowed_hosts)}
    if metrics.host not in ("0.0.0.0", "::", ""):
        hosts.add(_bracket(metrics.host))
    return hosts


def open_control(gw) -> ControlServer:
    """The control server of a gateway: the operators' unix socket, the read-only HTTP
    port, and (``[control] remote_reset``) the remote-reset port. A remote port that
    cannot start (a token file others can read) is one error line; the rest runs."""
    cfg = gw.cfg
    ctl = cfg.control
    server = ControlServer()
    gid, group = socket_group(ctl.group)
    path = ctl.socket or cfg.state_dir / "control.sock"
    server.listen(unix_listener(path, gid), OperatorEndpoint(gw), path=path)
    try:
        server.listen(tcp_listener(cfg.metrics.host, cfg.metrics.port, "metrics.port"),
                      HttpEndpoint(gw, allowed_hosts(cfg.metrics)))
    except SensormlError:
        server.stop()
        raise
    log.info("control socket %s (mode 0660, group %s): its group's members may reset",
             path, group)
    if ctl.remote_reset:
        try:
            token = read_token(ctl.token_file)
            sock = tcp_listener(ctl.remote_host, ctl.remote_port, "control.remote_port")
        except SensormlError as e:
            log.error("%s; remote reset listener not started", e)
        else:
            server.listen(sock, RemoteResetEndpoint(gw, token, ctl.token_file.name))
            log.warning("remote reset listening on %s:%d (bearer token of %s)",
                        ctl.remote_host, sock.getsockname()[1], ctl.token_file)
    return server
