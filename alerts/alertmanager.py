"""The Alertmanager sink: one alert per exposure, posted to ``/api/v2/alerts``, resolved on close.

Each exposure is an alert named ``PermwatchExposure`` whose labels say what
and where (``label``, ``severity``, ``folder``, the reading ``groups`` joined
by commas, the ``exposure_id``) and which burst it belongs to (``burst``), so
an Alertmanager route with ``group_by: [burst]`` turns a 5,000-folder burst
into one notification. Annotations carry the summary, people, actor, (maybe
hidden) paths, the exposure's kind (``contents`` or ``names``) and the replay
command. ``startsAt`` is when the exposure
opened; ``endsAt`` is set when it closes, which resolves the alert.

Alertmanager forgets an alert without ``endsAt`` after its
``resolve_timeout`` (5 min by default), so the sink re-sends what is still
open every ``resend_seconds`` (default 60). When an exposure's reading groups
change, its label set changes, which is a different alert to Alertmanager:
the old label set is resolved in the same post.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, field_validator

from alerts.base import SinkContext, SinkSettings
from alerts.digest import FIRST_RUN_NOTE, plural
from alerts.grouping import GroupUpdate, Member
from alerts.http import post
from alerts.redaction import shown_paths
from permwatch.events import ExposureKind

ALERT_NAME = "PermwatchExposure"


class AlertmanagerConfig(SinkSettings):
    kind: str = "alertmanager"
    url: str = Field(min_length=1, description="Alertmanager base URL, e.g. http://alertmanager:9093")
    resend_seconds: float = Field(default=60.0, gt=0, description="re-send open alerts; keep under resolve_timeout")
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_alerts_per_post: int = Field(default=1000, ge=1)
    extra_labels: dict[str, str] = Field(default_factory=dict, description="static labels, e.g. {team = 'soc'}")
    replay_url: str | None = Field(default=None, description="generatorURL template, e.g. https://pw/t/{exposure_id}")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")


class AlertmanagerSink:
    def __init__(self, config: AlertmanagerConfig, context: SinkContext | None = None) -> None:
        self.name = config.name or "alertmanager"
        self.settings: SinkSettings = config
        self.resend_seconds: float | None = config.resend_seconds
        self.config = config

    def render(self, update: GroupUpdate) -> list[dict[str, Any]]:
        """The alerts to post: those the update's events touched, or every open one for a refresh."""
        if update.refresh:
            members = [m for m in update.group.members if m.is_open]
        else:
            by_id = {m.exposure_id: m for m in update.group.members}
            touched = dict.fromkeys(e.exposure_id for e in update.events)
            members = [by_id[exposure_id] for exposure_id in touched if exposure_id in by_id]
        alerts: list[dict[str, Any]] = []
        for member in members:
            alerts.append(self._alert(member, update.group.group_id, member.open_groups, member.latest.closed_at))
            if member.previous_groups is not None and not update.refresh:
                alerts.append(
                    self._alert(member, update.group.group_id, member.previous_groups, member.latest.observed_at)
                )
        return alerts

    def _alert(self, member: Member, burst: str, groups: tuple[str, ...], ends_at: datetime | None) -> dict[str, Any]:
        event = member.latest
        paths = shown_paths(event.folder, event.sample_paths, hide=self.config.hide_below_label)
        readers = ", ".join(groups) or "users named in the ACL"
        what = "readable" if event.kind is ExposureKind.CONTENTS else "listable (names only, no file readable)"
        alert: dict[str, Any] = {
            "labels": {
                **self.config.extra_labels,
                "alertname": ALERT_NAME,
                "exposure_id": event.exposure_id,
                "label": event.label.name,
                "severity": event.label.severity.value,
                "folder": event.folder,
                "groups": ",".join(groups),
                "burst": burst,
            },
            "annotations": {
                "summary": (
                    f"{event.folder} (label {event.label.name}) {what} by "
                    f"{plural(member.open_people, 'person', 'people')} outside the label via {readers}"
                ),
                "kind": event.kind.value,
                "people": str(member.open_people),
                "actor": event.actor or "unknown",
                "paths": "\n".join(paths),
                "paths_affected": str(event.paths_affected),
                "replay": f"permwatch timeline {event.exposure_id}",
            },
            "startsAt": rfc3339(event.opened_at),
        }
        if event.preexisting:  # found by the first scan: said so, and where the report is
            alert["labels"]["preexisting"] = "true"
            alert["annotations"]["summary"] = f"First run (pre-existing): {alert['annotations']['summary']}"
            alert["annotations"]["description"] = FIRST_RUN_NOTE
        if ends_at is not None:
            alert["endsAt"] = rfc3339(ends_at)
        if self.config.replay_url:
            alert["generatorURL"] = self.config.replay_url.format(exposure_id=event.exposure_id, group_id=burst)
        return alert

    def send(self, payload: list[dict[str, Any]]) -> None:
        step = self.config.max_alerts_per_post
        for start in range(0, len(payload), step):
            body = json.dumps(payload[start : start + step], separators=(",", ":")).encode()
            post(
                f"{self.config.url}/api/v2/alerts",
                body,
                {"Content-Type": "application/json", "User-Agent": "permwatch"},
                timeout=self.config.timeout_seconds,
            )


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
