"""The Microsoft Teams sink: Adaptive Cards posted to the incoming webhook of a Teams Workflows flow.

Teams retired the Office 365 connector cards; a Workflows flow ("When a Teams
webhook request is received") posts Adaptive Cards only, and cannot edit a
card it posted. So a burst is a series of cards: the first says what is
exposed; each later update is a further card, "Update N of burst X", that
names the burst id and when its first card was posted, says what happened
(widened, changed, closed) and how the burst stands now. The body is
``{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "content": <AdaptiveCard 1.4>}]}``.

N is the card's position in its burst, kept in the alert state file
(``teams_cards``): ``render`` reads the number an update already has (or the
next one) and ``send`` records it after the flow accepted the card, so the
same update rendered again after a crash gets the same number, and one
already posted is not posted again.

The webhook URL carries its own signature (``sig=``), so it is a secret: it
comes from ``url_env`` or ``url_file`` and appears in no log line or error
(:func:`alerts.http.safe_url`). 429, 408 and 5xx are retried (honouring
``Retry-After``); other 4xx answers are permanent.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from alerts.base import ActorSinkSettings, SinkContext, SinkSettings
from alerts.digest import FIRST_RUN_NOTE, GroupDigest, digest
from alerts.grouping import GroupUpdate
from alerts.http import post
from alerts.mail_render import facts, folder_lines, headline, news_lines
from alerts.secrets import check_env_source, check_file_source, read_secret
from alerts.store import open_state_db
from permwatch.events import utcnow

CARD_VERSION = "1.4"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"

_KEEP_CARDS = timedelta(days=90)  # a burst open longer than this gets its update numbers restarted; none lasts so long
_SCHEMA = """
CREATE TABLE IF NOT EXISTS teams_cards (
    sink TEXT, group_id TEXT, update_key TEXT, number INTEGER NOT NULL, posted_at TEXT NOT NULL,
    PRIMARY KEY (sink, group_id, update_key)
);
"""


class TeamsConfig(ActorSinkSettings):
    kind: str = "teams"
    url_env: str | None = Field(default=None, description="environment variable holding the Workflows webhook URL")
    url_file: Path | None = Field(default=None, validate_default=True, description="file holding the webhook URL")
    timeout_seconds: float = Field(default=10.0, gt=0)
    replay_url: str | None = Field(default=None, description="button link template, e.g. https://pw/t/{exposure_id}")
    top_folders: int = Field(default=5, ge=1, le=20)

    @field_validator("url_env")
    @classmethod
    def _url_env_is_set(cls, name: str | None) -> str | None:
        return check_env_source(name)

    @field_validator("url_file")
    @classmethod
    def _one_url_source(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return check_file_source(path, info, what="url")


@dataclass(frozen=True)
class TeamsCard:
    """One card to post: its place in its burst (``number`` 0 is the first card) and the request body."""

    group_id: str
    update_key: str
    number: int
    body: dict[str, Any]


class TeamsCards:
    """Which cards of which burst were posted, and their numbers (in the alert state file)."""

    def __init__(self, conn: sqlite3.Connection, sink: str) -> None:
        self._conn = conn
        self._sink = sink
        conn.executescript(_SCHEMA)

    def number(self, group_id: str, update_key: str) -> tuple[int, datetime | None, bool]:
        """The update's number (its own if posted, else the next), when the burst's first card was posted, and
        whether this update was posted already."""
        row = self._conn.execute(
            "SELECT number FROM teams_cards WHERE sink = ? AND group_id = ? AND update_key = ?",
            [self._sink, group_id, update_key],
        ).fetchone()
        first = self._conn.execute(
            "SELECT posted_at FROM teams_cards WHERE sink = ? AND group_id = ? AND number = 0", [self._sink, group_id]
        ).fetchone()
        first_at = None if first is None else datetime.fromisoformat(first[0])
        if row is not None:
            return int(row[0]), first_at, True
        count = self._conn.execute(
            "SELECT COUNT(*) FROM teams_cards WHERE sink = ? AND group_id = ?", [self._sink, group_id]
        ).fetchone()[0]
        return int(count), first_at, False

    def posted(self, card: TeamsCard, at: datetime) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO teams_cards VALUES (?, ?, ?, ?, ?)",
            [self._sink, card.group_id, card.update_key, card.number, at.isoformat()],
        )

    def prune(self, before: datetime) -> None:
        """Forget the cards of bursts whose first card is older than ``before``."""
        self._conn.execute(
            "DELETE FROM teams_cards WHERE sink = ? AND group_id IN "
            "(SELECT group_id FROM teams_cards WHERE sink = ? AND number = 0 AND posted_at < ?)",
            [self._sink, self._sink, before.isoformat()],
        )

    def was_posted(self, card: TeamsCard) -> bool:
        return self.number(card.group_id, card.update_key)[2]


class TeamsSink:
    def __init__(self, config: TeamsConfig, context: SinkContext | None = None) -> None:
        self.name = config.name or "teams"
        self.settings: SinkSettings = config
        self.resend_seconds: float | None = None
        self.config = config
        self._url = read_secret(config.url_env, config.url_file, what="url")
        if not self._url.startswith(("https://", "http://")):
            raise ValueError(f"sink {self.name}: the webhook URL must start with https://")  # the URL is not shown
        database = context.database if context is not None else None
        self._cards = TeamsCards(database or open_state_db(":memory:"), self.name)
        self._clock = context.clock if context is not None else utcnow
        self._prune_at = self._clock()

    def __repr__(self) -> str:
        return f"TeamsSink(name={self.name!r})"

    def render(self, update: GroupUpdate) -> list[TeamsCard]:
        group_id = update.group.group_id
        update_key = hashlib.sha256("\n".join(e.event_id for e in update.events).encode()).hexdigest()[:16]
        number, first_at, _ = self._cards.number(group_id, update_key)
        content = adaptive_card(update, number, first_at, self.config)
        body = {"type": "message", "attachments": [{"contentType": CARD_CONTENT_TYPE, "content": content}]}
        return [TeamsCard(group_id, update_key, number, body)]

    def send(self, payload: list[TeamsCard]) -> None:
        for card in payload:
            if self._cards.was_posted(card):
                continue
            data = json.dumps(card.body, separators=(",", ":"), ensure_ascii=False).encode()
            headers = {"Content-Type": "application/json", "User-Agent": "permwatch"}
            post(self._url, data, headers, timeout=self.config.timeout_seconds)
            now = self._clock()
            self._cards.posted(card, now)
            if now >= self._prune_at:
                self._cards.prune(now - _KEEP_CARDS)
                self._prune_at = now + timedelta(days=1)


def adaptive_card(update: GroupUpdate, number: int, first_at: datetime | None, config: TeamsConfig) -> dict[str, Any]:
    """The Adaptive Card (1.4) for an update: card ``number`` of its burst (0: the first)."""
    d = digest(update.group, top=config.top_folders)
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": _title(d),
            "weight": "Bolder",
            "size": "Medium",
            "color": "Attention" if d.is_open else "Good",
            "wrap": True,
        }
    ]
    if number == 0:
        body.append(_subtle(f"Burst {d.group_id}"))
        if d.first_run and d.is_open:
            body.append({"type": "TextBlock", "text": _md(FIRST_RUN_NOTE), "wrap": True})
    else:
        since = f", first card {first_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if first_at is not None else ""
        body.append(_subtle(f"Update {number} of burst {d.group_id}{since}"))
        news = news_lines(update.group, update.events)
        if news:
            body.append({"type": "TextBlock", "text": _lines(news), "wrap": True})
    fact_rows = facts(d, name_actor=config.names_actor)
    body.append({"type": "FactSet", "facts": [{"title": name, "value": _md(value)} for name, value in fact_rows]})
    folders = folder_lines(d, hide_below_label=config.hide_below_label)
    body.append({"type": "TextBlock", "text": _lines(folders), "wrap": True})
    first = f" (first of {d.folders:,})" if d.folders > 1 else ""
    body.append(_subtle(_md(f"Replay: permwatch timeline {d.first_exposure_id}{first}")))
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": CARD_SCHEMA,
        "version": CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full"},
    }
    if config.replay_url:
        url = config.replay_url.format(exposure_id=d.first_exposure_id, group_id=d.group_id)
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Replay timeline", "url": url}]
    return card


def _title(d: GroupDigest) -> str:
    return ("🚨 " if d.is_open else "✅ ") + _md(headline(d))


def _subtle(text: str) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "isSubtle": True, "size": "Small", "wrap": True}


def _lines(lines: list[str]) -> str:
    """Teams renders a TextBlock's text as Markdown: a blank line breaks a line, and leading spaces are lost."""
    return "\n\n".join(("- " + _md(line.strip())) if line.startswith("  ") else _md(line) for line in lines)


_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\*_[]`<>"})


def _md(text: str) -> str:
    """Names as text, not Markdown: a folder called ``[open](https://…)`` must not become a link in the SOC's
    channel, nor ``_x_`` italics. Teams honours the backslash escapes (some older mobile clients show them)."""
    return text.translate(_MARKDOWN)
