"""Run a real Prometheus server (Debian's ``/usr/bin/prometheus``) for tests.

`PrometheusServer` writes a ``prometheus.yml`` into a caller-supplied work dir
(one static job per name, a short scrape and rule-evaluation interval, the rule
files given), starts Prometheus on a free loopback port with its TSDB in the
work dir, and waits until it is ready. Queries go through the HTTP API
(``/api/v1/query``), as Grafana's would. The server runs in its own process
group, dies with the Python process (parent-death signal where ``setpriv``
exists) and is killed at interpreter exit.
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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

DEFAULT_BINARY = "/usr/bin/prometheus"
_HOST = "127.0.0.1"
_LIVE: set[subprocess.Popen[bytes]] = set()


class PrometheusError(RuntimeError):
    """Prometheus could not start, or answered a query with an error."""


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
        port: int = sock.getsockname()[1]
        return port


class PrometheusServer:
    """One Prometheus scraping the given targets on loopback; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        *,
        binary: str = DEFAULT_BINARY,
        interval: str = "1s",
        start_timeout: float = 60.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.binary = binary
        self.interval = interval
        self.start_timeout = start_timeout
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise PrometheusError("Prometheus has not been started")
        return f"http://{_HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def write_config(self, jobs: Mapping[str, Sequence[str]], rule_files: Sequence[Path] = ()) -> Path:
        """``jobs``: job name → ``host:port`` targets, each scraped at ``/metrics``."""
        config = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(Path(f).resolve()) for f in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(targets)}]} for job, targets in jobs.items()
            ],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path

    def start(self, jobs: Mapping[str, Sequence[str]], rule_files: Sequence[Path] = ()) -> None:
        if self._proc is not None and self._proc.poll() is None:
            raise PrometheusError(f"Prometheus already running at {self.url}")
        if not os.access(self.binary, os.X_OK):
            raise PrometheusError(f"{self.binary} not found: install Debian's 'prometheus' package")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.write_config(jobs, rule_files)
        self.port = _free_loopback_port()
        command = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={_HOST}:{self.port}",
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

    def stop(self, timeout: float = 30.0) -> None:
        proc = self._proc
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
        self._proc = None

    # ------------------------------------------------------------------ API

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a success, else :class:`PrometheusError`."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) ``expr`` evaluates to now."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets_up(self) -> dict[str, str]:
        """scrape URL → health ("up", "down", "unknown") of every active target."""
        return {t["scrapeUrl"]: t["health"] for t in self.api("targets")["activeTargets"]}

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                raise PrometheusError(f"Prometheus exited during start\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass  # not listening yet, or "Service Unavailable" while it starts
            time.sleep(0.2)
        raise PrometheusError(f"Prometheus not ready at {self.url} after {self.start_timeout}s\n{self.tail()}")
