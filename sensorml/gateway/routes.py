"""What the gateway's control listeners serve (see :mod:`sensorml.gateway.control` for
the server and its bounds). :func:`open_control` builds the server a gateway runs.
"""

from __future__ import annotations

import json

from sensorml.gateway.control import (
    ControlServer,
    Job,
    Peer,
    Reply,
    error_reply,
    json_reply,
    tcp_listener,
)
from sensorml.gateway.httpwire import Head

#: connections the HTTP listener holds at once (Prometheus and a few `sensorml status`)
HTTP_CAP = 16


def _body(body: bytes) -> dict:
    if not body.strip():
        return {}
    try:
        d = json.loads(body)
    except ValueError:
        d = None
    return d if isinstance(d, dict) else {}


class HttpEndpoint:
    """``GET /metrics``, ``GET /status``, ``POST /reset``, ``POST /reload``."""

    name = "http"
    cap = HTTP_CAP
    paths = ("/metrics", "/status", "/reset", "/reload")

    def __init__(self, gw) -> None:
        self.gw = gw

    def check(self, head: Head, peer: Peer) -> Reply | None:
        if head.path not in self.paths:
            return error_reply(404, f"no such path {head.path}")
        want = "POST" if head.path in ("/reset", "/reload") else "GET"
        if head.method != want:
            return error_reply(405, f"{head.method} {head.path}: use {want}")
        return None

    def handle(self, head: Head, body: bytes, peer: Peer) -> Reply | Job:
        gw = self.gw
        if head.path == "/metrics":
            return Reply(200, gw.metrics.render(gw).encode(), "text/plain; version=0.0.4")
        if head.path == "/status":
            return json_reply(200, gw.status())
        if head.path == "/reload":
            gw.request_reload()
            return json_reply(200, {"ok": True})
        b = _body(body)
        by = str(b.get("by", "sensorml reset"))
        force, note = b.get("force") is True, str(b.get("note", ""))
        return Job(lambda: json_reply(200, gw.reset(by, force=force, note=note)))


def open_control(gw) -> ControlServer:
    """The control server of a gateway: its HTTP listener on ``[metrics] host:port``."""
    cfg = gw.cfg
    server = ControlServer()
    sock = tcp_listener(cfg.metrics.host, cfg.metrics.port, "metrics.port")
    server.listen(sock, HttpEndpoint(gw))
    return server
