"""A webhook receiver for tests: records every POST it gets, so a test can see what a real server sent out.

Alertmanager's ``webhook_configs`` (or any other notifier) points at
``receiver.url(path)``; `WebhookReceiver` answers ``200`` with an empty JSON
object and keeps each request's path, headers, raw body and decoded JSON
body, in arrival order. It is stdlib ``http.server`` in a daemon thread on a
free loopback port, stopped (and its port released) by :meth:`stop` or the
context manager, however the test ends.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.integration.servers.http_server import LoopbackHTTPServer
from tests.integration.servers.started import StartedInWith


@dataclass(frozen=True)
class ReceivedPost:
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    """The JSON body decoded, or None when it was not JSON."""
    at: float = field(default_factory=time.monotonic)


class WebhookReceiver(StartedInWith):
    def __init__(self) -> None:
        self._posts: list[ReceivedPost] = []
        self._lock = threading.Lock()
        self._http = LoopbackHTTPServer("webhook-receiver")

    def start(self) -> None:
        receiver = self

        class Handler(_Handler):
            owner = receiver

        self._http.start(Handler)

    def stop(self) -> None:
        self._http.stop()

    def url(self, path: str = "/") -> str:
        return self._http.url(path)

    def posts(self, path: str | None = None) -> list[ReceivedPost]:
        """What arrived so far (at ``path`` only, if given), oldest first."""
        with self._lock:
            return [p for p in self._posts if path is None or p.path == path]

    def _record(self, post: ReceivedPost) -> None:
        with self._lock:
            self._posts.append(post)


class _Handler(BaseHTTPRequestHandler):
    owner: WebhookReceiver
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.owner._record(ReceivedPost(self.path, dict(self.headers.items()), raw, body))
        data = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # the test output stays quiet
        return
