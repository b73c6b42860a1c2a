"""A threaded HTTP server on a free loopback port, for the fake remote services the tests start
(the hostile registry, the fake Hugging Face): `with Service():` serves until the block ends."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackService:
    """Serves `handler` (a BaseHTTPRequestHandler class whose `owner` is set to this object) on
    127.0.0.1 at `url`. Subclasses set their own state, then call `super().__init__(handler)`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        owner = self

        class Handler(handler):  # type: ignore[misc, valid-type]
            pass

        Handler.owner = owner  # type: ignore[attr-defined]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class ServiceHandler(BaseHTTPRequestHandler):
    """A handler that answers whole bodies (`_send`) and JSON documents (`_json`) with their length."""

    def log_message(self, *args: object) -> None:
        pass  # the tests read what a fake saw from its own records, not from stderr

    def _json(self, status: int, doc: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
