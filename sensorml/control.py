"""The gateway's local HTTP endpoint: ``/metrics`` (Prometheus), ``/status`` (JSON),
``POST /reset`` and ``POST /reload``. Bound to 127.0.0.1 by default; ``sensorml status``
and ``sensorml reset`` find it through ``<state_dir>/gateway.json``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.error import URLError
from urllib.request import Request, urlopen

from sensorml.errors import SensormlError


class ControlServer:
    def __init__(self, gateway, host: str, port: int) -> None:
        gw = gateway

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: str, ctype: str = "application/json") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path == "/metrics":
                    self._send(200, gw.metrics.render(gw), "text/plain; version=0.0.4")
                elif self.path == "/status":
                    self._send(200, json.dumps(gw.status(), default=str))
                else:
                    self._send(404, json.dumps({"error": f"no such path {self.path}"}))

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}") if n else {}
                if self.path == "/reset":
                    self._send(200, json.dumps(gw.reset(str(body.get("by", "sensorml reset")))))
                elif self.path == "/reload":
                    gw.request_reload()
                    self._send(200, json.dumps({"ok": True}))
                else:
                    self._send(404, json.dumps({"error": f"no such path {self.path}"}))

            def log_message(self, *args) -> None:
                pass

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise SensormlError(
                f"metrics.port: cannot listen on {host}:{port} ({e.strerror}); "
                "is another gateway running? use another port or 0") from None
        self.httpd.daemon_threads = True
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
    host, port = gateway_address(state_dir)
    data = None if body is None else json.dumps(body).encode()
    req = Request(f"http://{host}:{port}{path}", data=data, method="GET" if data is None else "POST")
    try:
        with urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except (URLError, OSError) as e:
        raise SensormlError(f"gateway at {host}:{port} does not answer ({e}); is it running?") from None
