"""A tiny CMMS for tests: an HTTP server on a free loopback port that keeps work orders by id.

POST /api/wo creates (409 if the id exists), PUT /api/wo/<id> updates (404 if it does not), GET /api/done
answers `{"member": completions}`. `script[method]` lists answers `(status, headers, body)` to give
before the normal behaviour (a 503 with Retry-After, a 400). Every request is recorded with its arrival
time.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


class FakeCmms:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.orders: dict[str, dict[str, Any]] = {}
        self.completions: list[Any] = []
        self.script: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}
        self.delay_s = 0.0
        cmms = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                cmms.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                      "body": body, "at": time.monotonic()})
                time.sleep(cmms.delay_s)
                queued = cmms.script.get(self.command)
                if queued:
                    status, headers, answer = queued.pop(0)
                    return self._answer(status, answer, headers)
                if self.command == "GET" and self.path == "/api/done":
                    return self._answer(200, json.dumps({"member": cmms.completions}).encode())
                if self.command == "POST" and self.path == "/api/wo":
                    doc = json.loads(body)
                    if doc["wonum"] in cmms.orders:
                        return self._answer(409, b'{"error": "exists"}')
                    cmms.orders[doc["wonum"]] = doc
                    return self._answer(201, body)
                if self.command == "PUT" and self.path.startswith("/api/wo/"):
                    wonum = unquote(self.path[len("/api/wo/"):])
                    if wonum not in cmms.orders:
                        return self._answer(404, b'{"error": "no such work order"}')
                    cmms.orders[wonum] = json.loads(body)
                    return self._answer(200, body)
                return self._answer(404, b'{"error": "no route"}')

            do_GET = do_POST = do_PUT = do_PATCH = _handle  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def of(self, method: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method]

    def __enter__(self) -> FakeCmms:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
