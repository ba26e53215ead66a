"""Run the real Prometheus Alertmanager (Debian's ``prometheus-alertmanager``) for tests.

`AlertmanagerServer` writes the given routing config into a caller-supplied
work dir, starts ``/usr/bin/prometheus-alertmanager`` on a free loopback port
with clustering off, and waits for ``/-/ready``. The process runs in its own
process group, dies with the thread that started it (parent-death signal
where ``setpriv`` exists) and is killed at interpreter exit, so a failed or
aborted test leaves nothing behind. Small helpers read ``/api/v2`` back.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.error import URLError
from urllib.parse import urlencode

BINARY = Path("/usr/bin/prometheus-alertmanager")
_HOST = "127.0.0.1"

# Group every alert by burst; wait and re-notify quickly; the receiver does nothing.
BURST_ROUTING = """\
route:
  receiver: "null"
  group_by: ["burst"]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
"""

_LIVE: set[subprocess.Popen[bytes]] = set()


class AlertmanagerError(RuntimeError):
    """Alertmanager is missing, would not start, or answered badly."""


@atexit.register
def _kill_all_live() -> None:
    for proc in list(_LIVE):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _LIVE.discard(proc)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


class AlertmanagerServer:
    def __init__(self, workdir: Path, *, config: str = BURST_ROUTING, start_timeout: float = 30.0) -> None:
        self.workdir = Path(workdir).resolve()
        self.config = config
        self.start_timeout = start_timeout
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise AlertmanagerError("Alertmanager has not been started")
        return f"http://{_HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "alertmanager.log"

    def start(self) -> None:
        if not BINARY.exists():
            raise AlertmanagerError(f"{BINARY} not found: apt-get install -y prometheus-alertmanager")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        config_path = self.workdir / "am.yml"
        config_path.write_text(self.config, encoding="utf-8")
        self.port = _free_loopback_port()
        command = [
            str(BINARY),
            f"--config.file={config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={_HOST}:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
        if setpriv is not None:
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE.add(self._proc)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _LIVE.discard(proc)

    def __enter__(self) -> AlertmanagerServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- reading it back ----------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        query = urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}{path}" + (f"?{query}" if query else ""), timeout=10) as response:
            return json.loads(response.read())

    def alerts(self, *matchers: str, **params: Any) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` with label matchers such as ``burst="burst-…"``."""
        result: list[dict[str, Any]] = self.get("/api/v2/alerts", filter=list(matchers), **params)
        return result

    def groups(self, *matchers: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v2/alerts/groups", filter=list(matchers))
        return result

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise AlertmanagerError(f"Alertmanager exited during start:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise AlertmanagerError(
            f"Alertmanager not ready at {self.url} after {self.start_timeout} s:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if not self.log_path.exists():
            return "<no log>"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
