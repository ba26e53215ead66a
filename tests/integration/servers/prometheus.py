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

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.integration.servers.process import ServerProcess
from tests.integration.servers.ready_at_http import ReadyAtHttp

DEFAULT_BINARY = "/usr/bin/prometheus"


class PrometheusError(RuntimeError):
    """Prometheus could not start, or answered a query with an error."""


class PrometheusServer(ReadyAtHttp):
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
        self._server = ServerProcess("Prometheus", self.log_path, PrometheusError)

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
        if self._server.running:
            raise PrometheusError(f"Prometheus already running at {self.url}")
        if not os.access(self.binary, os.X_OK):
            raise PrometheusError(f"{self.binary} not found: install Debian's 'prometheus' package")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.write_config(jobs, rule_files)
        self._launch([self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}"])

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
