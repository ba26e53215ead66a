"""The webhook sink: signed JSON POSTs per group update, for SOAR tools and home-made receivers.

The body is compact JSON with sorted keys: ``group`` (the burst's digest) and
``events`` (each new exposure event, as on the bus, plus its ``group_id``; at
most ``max_events_per_post`` per body, a bigger update is several posts).
``X-Permwatch-Signature: sha256=<hex>`` is the HMAC-SHA256 of the exact body
bytes under the shared secret (``secret_env`` or ``secret_file``), so a
receiver recomputes it over the raw body before parsing.
``X-Permwatch-Delivery`` is a stable id of the events in the body: after a
crash the same body may come again, and a receiver drops repeats by it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from alerts.base import SinkContext, SinkSettings
from alerts.digest import FIRST_RUN_NOTE, digest
from alerts.grouping import GroupUpdate
from alerts.http import post
from alerts.redaction import shown_paths
from alerts.secrets import check_env_source, check_file_source, read_secret
from permwatch.events import ExposureEvent

SIGNATURE_HEADER = "X-Permwatch-Signature"
DELIVERY_HEADER = "X-Permwatch-Delivery"


class WebhookConfig(SinkSettings):
    kind: str = "webhook"
    url: str = Field(min_length=1)
    secret_env: str | None = Field(default=None, description="environment variable holding the HMAC key")
    secret_file: Path | None = Field(default=None, validate_default=True, description="file holding the HMAC key")
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_events_per_post: int = Field(default=500, ge=1, description="a bigger update is split into several posts")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url

    @field_validator("secret_env")
    @classmethod
    def _secret_env_is_set(cls, name: str | None) -> str | None:
        return check_env_source(name)

    @field_validator("secret_file")
    @classmethod
    def _one_secret_source(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return check_file_source(path, info, what="secret")


@dataclass(frozen=True)
class WebhookRequest:
    body: bytes
    headers: dict[str, str]


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSink:
    def __init__(self, config: WebhookConfig, context: SinkContext | None = None) -> None:
        self.name = config.name or "webhook"
        self.settings: SinkSettings = config
        self.resend_seconds: float | None = None
        self.config = config
        self._secret = read_secret(config.secret_env, config.secret_file, what="secret").encode()

    def __repr__(self) -> str:
        return f"WebhookSink(name={self.name!r})"

    def render(self, update: GroupUpdate) -> list[WebhookRequest]:
        """One signed request per ``max_events_per_post`` events, each with the burst's digest."""
        d = digest(update.group)
        group = {
            "group_id": d.group_id,
            "status": "open" if d.is_open else "closed",
            "folders": d.folders,
            "open_folders": d.open_folders,
            "severity": d.severity.value,
            "labels": list(d.labels),
            "readers": list(d.readers),
            "people_max": d.people_max,
            "actor": d.actor,
            "actor_confidence": d.actor_confidence,
            "actor_unresolved": d.actor_unresolved,
            "opened_at": d.opened_at.isoformat(),
            "closed_at": None if d.closed_at is None else d.closed_at.isoformat(),
            "duration_seconds": d.duration_seconds,
            "top_folders": [m.latest.folder for m in d.top],
            "replay": f"permwatch timeline {d.first_exposure_id}",
            "first_run": d.first_run,
        }
        if d.first_run and d.is_open:
            group["summary"] = f"{d.first_run_headline}. {FIRST_RUN_NOTE}"
        step = self.config.max_events_per_post
        return [self._request(group, update, update.events[i : i + step]) for i in range(0, len(update.events), step)]

    def _request(self, group: dict[str, Any], update: GroupUpdate, events: tuple[ExposureEvent, ...]) -> WebhookRequest:
        hide = self.config.hide_below_label
        records = []
        for event in events:
            record: dict[str, Any] = event.model_dump(mode="json")
            record["sample_paths"] = list(shown_paths(event.folder, event.sample_paths, hide=hide))
            record["group_id"] = update.group.group_id
            records.append(record)
        body = {"type": "permwatch.alert", "version": 1, "group": group, "events": records}
        raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        delivery = hashlib.sha256("\n".join(e.event_id for e in events).encode()).hexdigest()[:32]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "permwatch",
            SIGNATURE_HEADER: signature(self._secret, raw),
            DELIVERY_HEADER: delivery,
        }
        return WebhookRequest(raw, headers)

    def send(self, payload: list[WebhookRequest]) -> None:
        for request in payload:
            post(self.config.url, request.body, request.headers, timeout=self.config.timeout_seconds)
