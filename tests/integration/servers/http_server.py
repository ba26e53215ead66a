"""A stdlib HTTP server on a free loopback port, served from a daemon thread: the base of the test's HTTP fakes.

`LoopbackHTTPServer` starts ``ThreadingHTTPServer`` with a handler class on
``127.0.0.1:0``, serves it from a daemon thread and, on :meth:`stop` (or
leaving its ``with`` block), shuts it down and releases the port, however the
test ends. The fakes (the Slack Web API, a webhook receiver) own one each and
bring their own handler.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

HOST = "127.0.0.1"


class LoopbackHTTPServer:
    def __init__(self, name: str) -> None:
        self.name = name
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        """Serve on ``port`` (0: a free one; a test restarting a receiver passes the port it had)."""
        self._server = ThreadingHTTPServer((HOST, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} is not running")
        return int(self._server.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def __enter__(self) -> LoopbackHTTPServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
