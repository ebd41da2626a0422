"""The gateway's local HTTP endpoint: ``/metrics`` (Prometheus), ``/status`` (JSON),
``POST /reset`` and ``POST /reload``. Bound to 127.0.0.1 by default; ``sensorml status``
and ``sensorml reset`` find it through ``<state_dir>/gateway.json``.
"""

from __future__ import annotations

import json
import socketserver
import threading
from pathlib import Path

from sensorml.errors import SensormlError

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
MAX_BODY = 64 * 1024


class ControlServer:
    """A small HTTP/1.0 server on :mod:`socketserver` (``http.server`` would pull in
    ``http.client`` and ``ssl``: ~7 MB a gateway does not need for three local routes)."""

    def __init__(self, gateway, host: str, port: int) -> None:
        gw = gateway

        def route(method: str, path: str, body: dict) -> tuple[int, str, str]:
            path = path.split("?", 1)[0]
            if method == "GET" and path == "/metrics":
                return 200, "text/plain; version=0.0.4", gw.metrics.render(gw)
            if method == "GET" and path == "/status":
                return 200, "application/json", json.dumps(gw.status(), default=str)
            if method == "POST" and path == "/reset":
                return 200, "application/json", json.dumps(
                    gw.reset(str(body.get("by", "sensorml reset")),
                             force=body.get("force") is True, note=str(body.get("note", ""))))
            if method == "POST" and path == "/reload":
                gw.request_reload()
                return 200, "application/json", json.dumps({"ok": True})
            if path in ("/metrics", "/status", "/reset", "/reload"):
                return 405, "application/json", json.dumps({"error": f"{method} {path}"})
            return 404, "application/json", json.dumps({"error": f"no such path {path}"})

        class Handler(socketserver.StreamRequestHandler):
            timeout = 10

            def handle(self) -> None:
                try:
                    line = self.rfile.readline(8192).decode("latin-1").split()
                    headers = {}
                    while True:
                        h = self.rfile.readline(8192)
                        if h in (b"\r\n", b"\n", b""):
                            break
                        k, _, v = h.decode("latin-1").partition(":")
                        headers[k.strip().lower()] = v.strip()
                    if len(line) < 2:
                        return self._send(400, "application/json", '{"error": "bad request"}')
                    n = min(int(headers.get("content-length") or 0), MAX_BODY)
                    raw = self.rfile.read(n) if n else b""
                    body = json.loads(raw) if raw.strip() else {}
                    if not isinstance(body, dict):
                        body = {}
                except (ValueError, OSError):
                    return self._send(400, "application/json", '{"error": "bad request"}')
                self._send(*route(line[0].upper(), line[1], body))

            def _send(self, code: int, ctype: str, text: str) -> None:
                data = text.encode()
                head = (f"HTTP/1.0 {code} {_REASONS.get(code, '')}\r\nContent-Type: {ctype}\r\n"
                        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
                try:
                    self.wfile.write(head.encode() + data)
                except OSError:
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        try:
            self.httpd = Server((host, port), Handler)
        except OSError as e:
            raise SensormlError(
                f"metrics.port: cannot listen on {host}:{port} ({e.strerror}); "
                "is another gateway running? use another port or 0") from None
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="control",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def gateway_address(state_dir: Path) -> tuple[str, int]:
    """Where the running gateway of this state dir listens; one-line error if none runs."""
    f = state_dir / "gateway.json"
    try:
        info = json.loads(f.read_text())
    except FileNotFoundError:
        raise SensormlError(f"no gateway is running for {state_dir} ({f} not found)") from None
    return info["host"], int(info["port"])


def call(state_dir: Path, path: str, body: dict | None = None, timeout: float = 5.0) -> dict:
    from urllib.error import URLError
    from urllib.request import Request, urlopen

    host, port = gateway_address(state_dir)
    data = None if body is None else json.dumps(body).encode()
    req = Request(f"http://{host}:{port}{path}", data=data, method="GET" if data is None else "POST")
    try:
        with urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except (URLError, OSError) as e:
        raise SensormlError(f"gateway at {host}:{port} does not answer ({e}); is it running?") from None
