"""The Slack sink: one message per group of exposures, its thread for what happens next.

``render`` (pure, in :mod:`alerts.slack_render`) routes each exposure to a
channel (the first of ``routes`` whose labels and severity match, else
``channel``) and returns, per channel, the root message and an optional thread
reply. ``send`` posts the root the first time (``chat.postMessage``) and
remembers its channel id and ``ts`` in the alert state file, so later updates,
even after a restart, ``chat.update`` the same message and reply in its
thread.

Errors: a 429 is retried after its ``Retry-After``; 5xx, timeouts and
connection failures are retryable; Slack's ``ok: false`` answers
(``invalid_auth``, ``channel_not_found``, …) are permanent, except the few
that say "try again". slack-sdk's own retry handlers are switched off so the
dispatcher alone decides (with backoff, stoppable). A post that got no answer
(timeout, 5xx, crash) may or may not have reached Slack: it stays *pending*,
and before posting it again the sink looks for it in the channel's history by
its message metadata (needs the ``channels:history`` scope and channel ids in
the config; without them it posts again and logs why). Each post also notes
which exposure events it tells: events delivered again after a crash between
a post and the dispatcher's mark (perhaps with others, so in another reply)
are not told twice, and an opening that joins a root already posted is told
in the thread as a widening, so each open and close is one message's news.

The bot token comes from ``token_env`` or ``token_file`` and lives only in
the ``WebClient``: never in the config model, a log line, an error or a payload.
"""

from __future__ import annotations

import fnmatch
import http.client
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.error import URLError

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from alerts.base import SEVERITY_RANK, PermanentSinkError, RetryableSinkError, SinkContext, SinkSettings
from alerts.grouping import GroupSnapshot, GroupUpdate
from alerts.secrets import check_env_source, check_file_source, read_secret
from alerts.slack_render import (
    METADATA_EVENT_TYPE,
    RenderOptions,
    SlackPost,
    SlackThreadUpdate,
    render_thread_update,
)
from alerts.store import PendingPost, SlackPosts, open_state_db
from permwatch.events import ExposureEvent, Severity

log = logging.getLogger("permwatch.alerts.slack")

# ok: false errors that mean "not now" rather than "never"; after all but "ratelimited" the call may have been done
_RETRYABLE_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
_ERROR_CODE = re.compile(r"[a-z0-9_]{1,64}")
_GONE_MESSAGE_ERRORS = frozenset({"message_not_found", "cant_update_message"})


class SlackRoute(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: str = Field(min_length=1, description="channel id (C…) or name")
    labels: list[str] = Field(default_factory=list, description="label names (fnmatch globs); empty: any")
    min_severity: Severity = Severity.LOW

    def matches(self, exposure: ExposureEvent) -> bool:
        if SEVERITY_RANK[exposure.label.severity] < SEVERITY_RANK[self.min_severity]:
            return False
        return not self.labels or any(fnmatch.fnmatchcase(exposure.label.name, glob) for glob in self.labels)


class SlackConfig(SinkSettings):
    kind: str = "slack"
    channel: str = Field(min_length=1, description="default channel id (C…) or name")
    routes: list[SlackRoute] = Field(default_factory=list, description="first match wins, else `channel`")
    token_env: str | None = Field(default=None, description="environment variable holding the bot token")
    token_file: Path | None = Field(default=None, validate_default=True, description="file holding the bot token")
    api_url: str = "https://slack.com/api/"
    timeout_seconds: int = Field(default=10, ge=1, le=120)
    replay_url: str | None = Field(default=None, description="link template, e.g. https://pw/timeline/{exposure_id}")
    top_folders: int = Field(default=5, ge=1, le=20)
    reconcile_posts: bool = Field(default=True, description="look up unconfirmed posts before posting again")
    # -- respond (issue 19): buttons on the alert and the endpoint Slack posts their clicks to
    interactions_listen: str | None = Field(
        default=None, description="host:port of the interactivity endpoint (alerts role); set: alerts get buttons"
    )
    signing_secret_env: str | None = Field(default=None, description="environment variable holding the signing secret")
    signing_secret_file: Path | None = Field(default=None, description="file holding Slack's signing secret")
    approve_days: float = Field(
        default=7.0, gt=0, le=366, description="the last day the Approve form suggests, this many days ahead"
    )

    @model_validator(mode="after")
    def _interactions_need_a_secret(self) -> SlackConfig:
        if self.interactions_listen is None:
            return self
        host, _, port = self.interactions_listen.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ValueError("interactions_listen must be host:port, e.g. 127.0.0.1:3000")
        read_secret(self.signing_secret_env, self.signing_secret_file, what="signing_secret")  # there, or say where
        return self

    @field_validator("token_env")
    @classmethod
    def _token_env_is_set(cls, name: str | None) -> str | None:
        return check_env_source(name)

    @field_validator("token_file")
    @classmethod
    def _one_token_source(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return check_file_source(path, info, what="token")

    def channel_for(self, exposure: ExposureEvent) -> str:
        return next((r.channel for r in self.routes if r.matches(exposure)), self.channel)


class SlackSink:
    def __init__(self, config: SlackConfig, context: SinkContext | None = None) -> None:
        context = context or SinkContext()
        self.name = config.name or "slack"
        self.settings: SinkSettings = config
        self.resend_seconds: float | None = None
        self.config = config
        buttons = config.interactions_listen is not None
        self._options = RenderOptions(config.hide_below_label, config.replay_url, config.top_folders, buttons)
        self._posts = SlackPosts(context.database or open_state_db(":memory:"))
        self._clock = context.clock
        token = read_secret(config.token_env, config.token_file, what="token")
        self._client = WebClient(
            token=token, base_url=config.api_url, timeout=config.timeout_seconds, retry_handlers=[]
        )

    def __repr__(self) -> str:
        return f"SlackSink(name={self.name!r}, channel={self.config.channel!r})"

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> None:
        """Slack's ``views.open``: a modal for the one whose click carried ``trigger_id`` (the Approve form)."""
        self._client.views_open(trigger_id=trigger_id, view=view)

    # ------------------------------------------------------------ render

    def render(self, update: GroupUpdate) -> list[SlackThreadUpdate]:
        """Per channel the update touches (in order of its first event there): root and reply.

        Events a confirmed post already tells are left out: after a crash between posting and the dispatcher's
        mark they come again, perhaps with others in another batch, which would make another reply."""
        channels: dict[str, list[ExposureEvent]] = {}
        for event in update.events:
            channels.setdefault(self.config.channel_for(event), []).append(event)
        return [
            self._render_for(update.group.only(self._routed_to(channel)), tuple(events), channel)
            for channel, events in channels.items()
        ]

    def _render_for(self, group: GroupSnapshot, events: tuple[ExposureEvent, ...], channel: str) -> SlackThreadUpdate:
        told = self._posts.told(self.name, [e.event_id for e in events]) if events else set()
        # one of each: a processor killed between publishing and committing publishes its events again
        fresh: dict[str, ExposureEvent] = {}
        for event in events:
            if event.event_id not in told:
                fresh.setdefault(event.event_id, event)
        return render_thread_update(
            group,
            tuple(fresh.values()),
            channel,
            self._options,
            root_posted=self._posts.posted(self.name, f"{group.group_id}/{channel}/root") is not None,
        )

    def _settled(self, item: SlackThreadUpdate) -> SlackThreadUpdate:
        """``item``, rendered again if a post sent before a crash (unconfirmed) tells some of its events: such a
        post is looked for in the channel and confirmed if Slack has it, else forgotten (it did not land)."""
        pending = self._posts.pending_telling(self.name, [e.event_id for e in item.events])
        if not pending or item.group is None:
            return item
        for post_key, post in pending.items():
            found = self._find(post_key, post) if self.config.reconcile_posts else None
            if found is None:
                self._posts.forget(self.name, post_key)
            else:
                self._posts.confirm(self.name, post_key, *found)
        return self._render_for(item.group, item.events, item.channel)

    def _routed_to(self, channel: str) -> Callable[[ExposureEvent], bool]:
        return lambda exposure: self.config.channel_for(exposure) == channel

    # ------------------------------------------------------------ send

    def send(self, payload: list[SlackThreadUpdate]) -> None:
        for item in map(self._settled, payload):
            channel_id, ts = self._root(item)
            if item.reply is not None:
                self._post(item.group_id, item.reply, channel_id, ts)

    def _root(self, item: SlackThreadUpdate) -> tuple[str, str]:
        posted = self._posts.posted(self.name, item.root.post_key)
        if posted is not None:
            channel_id, ts = posted
            try:
                self._call(
                    "chat.update",
                    lambda: self._client.chat_update(
                        channel=channel_id, ts=ts, text=item.root.text, blocks=item.root.blocks
                    ),
                )
                return posted
            except SlackRefused as exc:
                if exc.code not in _GONE_MESSAGE_ERRORS:
                    raise exc.error from None
                log.warning(
                    "sink %s: message %s of %s is gone (%s); posting it anew", self.name, ts, item.group_id, exc.code
                )
                self._posts.forget(self.name, item.root.post_key)
        return self._post(item.group_id, item.root, item.channel, None)

    def _post(self, group_id: str, post: SlackPost, channel: str, thread_ts: str | None) -> tuple[str, str]:
        """Post once: skip what was confirmed, find what was sent but not confirmed, else post and confirm."""
        posted = self._posts.posted(self.name, post.post_key)
        if posted is not None:
            return posted
        pending = self._posts.pending(self.name, post.post_key)
        if pending is not None and self.config.reconcile_posts:
            found = self._find(post.post_key, pending)
            if found is not None:
                self._posts.confirm(self.name, post.post_key, found[0], found[1])
                return found
        self._posts.begin(self.name, post.post_key, group_id, PendingPost(channel, thread_ts, self._now()), post.told)
        try:
            response = self._call(
                "chat.postMessage",
                lambda: self._client.chat_postMessage(
                    channel=channel,
                    thread_ts=thread_ts,
                    text=post.text,
                    blocks=post.blocks,
                    metadata=post.metadata,
                    unfurl_links=False,
                    unfurl_media=False,
                ),
            )
        except SlackRefused as exc:
            self._posts.forget(self.name, post.post_key)  # Slack said no: nothing was posted
            raise exc.error from None
        channel_id, ts = str(response["channel"]), str(response["ts"])
        self._posts.confirm(self.name, post.post_key, channel_id, ts)
        return channel_id, ts

    def _find(self, post_key: str, pending: PendingPost) -> tuple[str, str] | None:
        """The (channel, ts) of an unconfirmed post if Slack has it, from the history around when it was sent."""
        oldest = f"{pending.since - 60:.6f}"
        try:
            if pending.thread_ts is None:
                response = self._call(
                    "conversations.history",
                    lambda: self._client.conversations_history(
                        channel=pending.channel, oldest=oldest, limit=200, include_all_metadata=True
                    ),
                )
            else:
                thread_ts = pending.thread_ts
                response = self._call(
                    "conversations.replies",
                    lambda: self._client.conversations_replies(
                        channel=pending.channel, ts=thread_ts, oldest=oldest, limit=200, include_all_metadata=True
                    ),
                )
        except SlackRefused as exc:
            if isinstance(exc.error, RetryableSinkError):
                raise exc.error from None
            log.warning("sink %s: cannot look for an unconfirmed post (%s); posting it again", self.name, exc.code)
            return None
        for message in response.get("messages") or []:
            metadata = message.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if metadata.get("event_type") == METADATA_EVENT_TYPE and payload.get("post_key") == post_key:
                log.info("sink %s: found unconfirmed post %s in the channel; not posting it again", self.name, post_key)
                return pending.channel, str(message["ts"])
        return None

    def _call(self, method: str, invoke: Callable[[], SlackResponse]) -> SlackResponse:
        """Run one Web API call; map every failure to a sink error that names no secret."""
        try:
            return invoke()
        except SlackApiError as exc:
            raise error_for(method, exc.response) from None
        except (URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise RetryableSinkError(f"slack {method}: {type(exc).__name__}: {_reason(exc)}") from None

    def _now(self) -> float:
        return self._clock().timestamp()


class SlackRefused(Exception):
    """Slack answered and did not do it (ok: false, or 429): nothing happened, so it is safe to send again."""

    def __init__(self, code: str, error: PermanentSinkError | RetryableSinkError) -> None:
        super().__init__(code)
        self.code = code
        self.error = error


def error_for(method: str, response: SlackResponse) -> Exception:
    status = response.status_code
    data: Any = response.data if isinstance(response.data, dict) else {}
    error = str(data.get("error") or "")
    code = error if _ERROR_CODE.fullmatch(error) else f"http_{status}"  # not an HTML body slack-sdk quoted
    if status == 429 or code == "ratelimited":
        retry_after = _retry_after(response.headers)
        return SlackRefused(
            code, RetryableSinkError(f"slack {method}: rate limited ({status})", retry_after=retry_after)
        )
    if status >= 500 or code in _RETRYABLE_ERRORS:
        return RetryableSinkError(f"slack {method}: {code}" + ("" if status == 200 else f" (HTTP {status})"))
    return SlackRefused(
        code, PermanentSinkError(f"slack {method}: {code}" + ("" if status == 200 else f" (HTTP {status})"))
    )


def _retry_after(headers: dict[str, Any]) -> float | None:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            text = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(text))
            except (TypeError, ValueError):
                return None
    return None


def _reason(exc: Exception) -> str:
    reason = exc.reason if isinstance(exc, URLError) else exc
    return str(reason)[:200]
