"""A threaded HTTP server on a free loopback port, for the fake remote services the tests start
(the hostile registry, the fake Hugging Face): `with Service():` serves until the block ends."""

from __future__ import annotations

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
