"""What the Prometheus and Alertmanager fixtures share: a server started on a free loopback port
(``--web.listen-address``) that is ready when its ``/-/ready`` answers 200, and is stopped again if it never does."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from tests.integration.servers.process import ServerProcess, free_loopback_ports, log_tail

HOST = "127.0.0.1"


class ReadyAtHttp:
    """A Prometheus-style server fixture: ``workdir``, ``log_path``, ``start_timeout`` and its ``_server`` process;
    ``port`` and ``url`` once started."""

    workdir: Path
    start_timeout: float
    port: int | None
    _server: ServerProcess

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    @property
    def url(self) -> str:
        if self.port is None:
            raise self._server.error(f"{self._server.name} has not been started")
        return f"http://{HOST}:{self.port}"

    def stop(self, timeout: float = 30.0) -> None:
        self._server.stop(timeout)

    def _launch(self, command: list[str]) -> None:
        """Run ``command`` listening on a free loopback port, logging warnings and errors only, and wait until
        it is ready; stop it if it is not."""
        self.port = free_loopback_ports(1, self._server.error)[0]
        listening = [*command, f"--web.listen-address={HOST}:{self.port}", "--log.level=warn"]
        self._server.spawn(listening, cwd=self.workdir, banner=False)
        try:
            # OSError: not listening yet
            self._server.wait_ready(
                self._ready,
                timeout=self.start_timeout,
                where=self.url,
                logs=lambda: log_tail(self.log_path, 40),
                interval=0.2,
            )
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as answer:  # 503 while it starts: close it, or its socket is left to the GC
            answer.close()
            return False
