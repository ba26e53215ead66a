"""Serving one process's metrics at ``/metrics`` over HTTP, on the address ``[metrics] listen`` names.

The server is prometheus-client's own (a threading WSGI server on a daemon
thread). It logs the address it really got, which matters for port 0, and
stops with the process's other stages.
"""

from __future__ import annotations

import logging
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
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


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
