"""Serving one process's metrics at ``/metrics`` over HTTP, on the address ``[metrics] listen`` names.

The server is prometheus-client's own (a threading WSGI server on a daemon
thread). It logs the address it really got, which matters for port 0, and
stops with the process's other stages: at once, rather than at the server
loop's next poll (it polls every 0.5 s, half of a stop's time).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from permwatch.config import ConfigError, MetricsConfig

log = logging.getLogger("permwatch.metrics")


class MetricsServer:
    """A running ``/metrics`` endpoint."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port: int = server.server_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        stopping = threading.Thread(target=self._server.shutdown, name="metrics-shutdown")
        stopping.start()
        while stopping.is_alive():
            self._wake()  # a connection wakes the loop, which then sees the shutdown asked
            stopping.join(0.02)
        self._server.server_close()
        self._thread.join()

    def _wake(self) -> None:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        with contextlib.suppress(OSError), socket.create_connection((host, self.port), timeout=0.2):
            pass


def serve_metrics(config: MetricsConfig, registry: CollectorRegistry) -> MetricsServer | None:
    """Start serving ``registry`` where ``config`` says; None when metrics are off. Raises :class:`ConfigError`."""
    address = config.address
    if address is None:
        return None
    host, port = address
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"key 'metrics.listen': cannot listen on {config.listen!r}: {exc.strerror}") from None
    serving = MetricsServer(server, thread, host)
    log.info("metrics: serving %s", serving.url)
    return serving
