"""Run the real Prometheus Alertmanager (Debian's ``prometheus-alertmanager``) for tests.

`AlertmanagerServer` writes the given routing config (`BURST_ROUTING`, or
`burst_webhook_routing` to send the notifications to a test's webhook
receiver) into a caller-supplied work dir, starts
``/usr/bin/prometheus-alertmanager`` on a free loopback port with clustering
off, and waits for ``/-/ready``. The process runs in its own process group,
dies with the thread that started it (parent-death signal where ``setpriv``
exists) and is killed at interpreter exit, so a failed or aborted test leaves
nothing behind. Small helpers read ``/api/v2`` back.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.integration.servers.process import ServerProcess
from tests.integration.servers.ready_at_http import ReadyAtHttp
from tests.integration.servers.started import StartedInWith

BINARY = Path("/usr/bin/prometheus-alertmanager")

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


def burst_webhook_routing(url: str, *, group_wait: str = "1s", group_interval: str = "1s") -> str:
    """Group every alert by burst and send each group's notifications (resolved ones too) to the webhook ``url``.

    ``max_alerts: 0`` sends every alert of a group, so a test sees them all; the
    short waits keep a test fast, and the long repeat interval means a group is
    notified again only when it changed.
    """
    return f"""\
route:
  receiver: burst-webhook
  group_by: ["burst"]
  group_wait: {group_wait}
  group_interval: {group_interval}
  repeat_interval: 1h
receivers:
  - name: burst-webhook
    webhook_configs:
      - url: {json.dumps(url)}
        send_resolved: true
        max_alerts: 0
"""


class AlertmanagerError(RuntimeError):
    """Alertmanager is missing, would not start, or answered badly."""


class AlertmanagerServer(ReadyAtHttp, StartedInWith):
    def __init__(self, workdir: Path, *, config: str = BURST_ROUTING, start_timeout: float = 30.0) -> None:
        self.workdir = Path(workdir).resolve()
        self.config = config
        self.start_timeout = start_timeout
        self.port: int | None = None
        self._server = ServerProcess("Alertmanager", self.log_path, AlertmanagerError)

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
        storage = f"--storage.path={self.workdir / 'data'}"
        self._launch([str(BINARY), f"--config.file={config_path}", storage, "--cluster.listen-address="])

    def stop(self, timeout: float = 10.0) -> None:
        self._server.stop(timeout)

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
