"""Slack Block Kit messages for a group of exposures: pure functions, compared exactly by the unit tests.

One *root* message per group (and channel) says what is exposed: label,
severity, the folder or folder count, the groups that can now read and how
many people, who changed it and when, and the replay command. Every later
update of the group re-renders the root (``chat.update``: its status line
turns "Resolved after 3 min 12 s" on close) and, when something happened that
the SOC should hear about, a *reply* in the root's thread says what: the
burst widened, a folder changed, folders closed. Every text is escaped for
mrkdwn; paths can be hidden below the labelled folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from alerts.digest import FIRST_RUN_NOTE, GroupDigest, digest, first_names, format_duration, news_by_status, plural
from alerts.grouping import GroupSnapshot, Member
from alerts.redaction import shown_paths
from permwatch.events import ExposureEvent, ExposureKind, ExposureStatus

METADATA_EVENT_TYPE = "permwatch_alert"
METADATA_EVENTS_MAX = 100
"""Exposure event ids a message's metadata names at most (a burst's first message can tell thousands)."""
OPENED = ExposureStatus.OPENED
HEADER_MAX = 150
TEXT_MAX = 2900  # section text may hold 3,000 characters
FIELD_MAX = 1900  # a section field 2,000


@dataclass(frozen=True)
class SlackPost:
    """One message: ``text`` is the notification and screen-reader fallback of ``blocks``."""

    post_key: str
    text: str
    blocks: list[dict[str, Any]]
    metadata: dict[str, Any]
    told: tuple[str, ...] = ()
    """The exposure event ids this message tells when posted (all of them; the metadata names the first 100)."""


@dataclass(frozen=True)
class SlackThreadUpdate:
    """What to do in one channel for one group: post or update ``root``, then post ``reply`` in its thread."""

    group_id: str
    channel: str
    root: SlackPost
    reply: SlackPost | None
    events: tuple[ExposureEvent, ...] = field(default=(), repr=False, compare=False)
    """What it was rendered from (with :attr:`group`), never sent: a sink that learns some were told already
    renders again."""
    group: GroupSnapshot | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class RenderOptions:
    hide_below_label: bool = False
    replay_url: str | None = None
    top_folders: int = 5
    buttons: bool = False
    """Acknowledge / Approve / Revert on the root message (the Slack sink's ``interactions_listen`` is set)"""


def render_thread_update(
    group: GroupSnapshot,
    events: tuple[ExposureEvent, ...],
    channel: str,
    options: RenderOptions,
    *,
    root_posted: bool = False,
) -> SlackThreadUpdate:
    """``root_posted``: the group's root is in the channel already, so every opening in ``events`` widens it (else
    the openings that make up the whole group are the root's own news)."""
    root_key = f"{group.group_id}/{channel}/root"
    root = root_message(group, options, post_key=root_key)
    reply_key = (
        f"{group.group_id}/{channel}/" + hashlib.sha256("\n".join(e.event_id for e in events).encode()).hexdigest()[:16]
    )
    reply = reply_message(group, events, options, post_key=reply_key, widens=root_posted)
    if not root_posted:
        # Posted now, it shows the group as it is: it tells what the reply does not (the openings that make up the
        # group, with any later change of theirs in this update). Later its updates tell nothing.
        in_reply = set(reply.told) if reply is not None else set()
        told = [e for e in events if e.event_id not in in_reply]
        root = replace(root, metadata=_metadata(group.group_id, root_key, told), told=_ids(told))
    return SlackThreadUpdate(group.group_id, channel, root, reply, events, group)


def _ids(events: Sequence[ExposureEvent]) -> tuple[str, ...]:
    return tuple(e.event_id for e in events)


def root_message(group: GroupSnapshot, options: RenderOptions, *, post_key: str) -> SlackPost:
    d = digest(group, top=options.top_folders)
    what = plural(d.folders, "folder")
    readers = first_names(d.readers) or "people outside the label"
    severity = d.severity.value.capitalize()
    first_run = d.first_run
    if d.is_open and first_run:  # one alert for what the first scan found, pointing to the report
        title = f":mag: {d.first_run_headline}"
        status = "Open" if d.open_folders == d.folders else f"Open: {d.open_folders:,} of {d.folders:,} folders"
        text = f"{d.first_run_headline}, readable by {readers}"
    elif d.is_open:
        title = f":rotating_light: {severity} exposure: {what} readable by {readers}"
        status = "Open" if d.open_folders == d.folders else f"Open: {d.open_folders:,} of {d.folders:,} folders"
        text = f"{severity} exposure: {what} readable by {readers}"
    else:
        lasted = format_duration(d.duration_seconds or 0.0)
        title = f":white_check_mark: Resolved: {what} no longer readable by {readers}"
        status = f"Resolved after {lasted}"
        text = f"Resolved after {lasted}: {what} no longer readable by {readers}"
    text += f" (label {first_names(d.labels)}); changed by {d.actor_text or 'unknown'}"
    people = f"{d.people_max:,}" if d.folders == 1 else f"up to {d.people_max:,} per folder"
    fields = [
        f"*Status*\n{status}",
        f"*Severity*\n{severity}",
        f"*Label*\n{_codes(d.labels)}",
        f"*Readable by*\n{_esc(first_names(d.readers, limit=10)) or '_users named in the ACL_'}",
        f"*People outside the label*\n{people}",
        f"*Changed by*\n{_esc(d.actor_text or 'unknown')}",
        f"*When*\n{slack_date(d.opened_at)}",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, HEADER_MAX), "emoji": True}},
        {"type": "section", "fields": [_mrkdwn(_cut(f, FIELD_MAX)) for f in fields]},
        {"type": "section", "text": _mrkdwn(_cut(_folders_text(d, options), TEXT_MAX))},
        {"type": "context", "elements": [_mrkdwn(_replay_text(d, options))]},
    ]
    if first_run:
        blocks.insert(3, {"type": "section", "text": _mrkdwn(_first_run_text())})
    if options.buttons:
        blocks += action_blocks(group, options)
    return SlackPost(post_key, _esc(text), blocks, _metadata(group.group_id, post_key))


def _first_run_text() -> str:
    """The digest's one first-run note (:data:`alerts.digest.FIRST_RUN_NOTE`) in Slack's markup: the label in
    bold, the command as code."""
    head, _, rest = FIRST_RUN_NOTE.partition(": ")
    command = "permwatch entitlements --config <file>"
    before, _, after = rest.partition(command)
    return f"*{_esc(head)}*: {_esc(before)}{_code(command)}{_esc(after)}"


BUTTONS = (("permwatch_ack", "Acknowledge", None), ("permwatch_approve", "Approve", None))
REVERT_BUTTON = ("permwatch_revert", "Revert", "danger")
MAX_BUTTON_ROWS = 3
VALUE_MAX = 2000


def button_value(exposure_id: str, folder: str) -> str:
    """What a button carries: the exposure it decides about (read back by alerts/slack_interactions.py)."""
    return json.dumps({"exposure_id": exposure_id, "folder": folder}, separators=(",", ":"))


def action_blocks(group: GroupSnapshot, options: RenderOptions) -> list[dict[str, Any]]:
    """One row of buttons per open exposure (the first few): the endpoint (alerts/slack_interactions.py) turns a
    click into a decision about that exposure."""
    rows = []
    open_members = [m for m in group.members if m.is_open]
    for i, member in enumerate(open_members[:MAX_BUTTON_ROWS]):
        event = member.latest
        value = button_value(event.exposure_id, event.folder)
        if len(value) > VALUE_MAX:
            continue
        elements = []
        for action_id, label, style in (*BUTTONS, REVERT_BUTTON):
            button: dict[str, Any] = {
                "type": "button",
                "action_id": f"{action_id}:{i}",
                "text": {"type": "plain_text", "text": label if len(open_members) == 1 else f"{label} #{i + 1}"},
                "value": value,
            }
            if style:
                button["style"] = style
            elements.append(button)
        rows.append({"type": "actions", "block_id": f"permwatch-{event.exposure_id}", "elements": elements})
    return rows


def reply_message(
    group: GroupSnapshot,
    events: tuple[ExposureEvent, ...],
    options: RenderOptions,
    *,
    post_key: str,
    widens: bool = False,
) -> SlackPost | None:
    """The thread reply for ``events`` (new to this channel), or None when they only opened the group.
    ``widens``: the root is posted already, so openings are news for the thread."""
    latest_opened, changed, closed = news_by_status(events)
    lines: list[str] = []
    # An exposure that opened in this update is news as an opening, shown as it is now, however many changes
    # followed in the same update (a backlog after a restart brings them together); the first run's root message
    # counts what the first scan found, no reply each.
    opening = {e.exposure_id for e in events if e.status is OPENED and not e.preexisting}
    opened = [e for e in latest_opened if not e.preexisting] + [e for e in changed if e.exposure_id in opening]
    changed = [e for e in changed if e.exposure_id not in opening]
    widened = bool(opened) and (widens or len(group.members) > len(opened))
    if widened:
        lines.append(
            f":heavy_plus_sign: *Widened*: {plural(len(opened), 'more folder')} now readable, "
            f"{len(group.members):,} in this alert"
        )
        lines += [f"• {_code(e.folder)} by {_esc(first_names(e.groups)) or 'named users'}" for e in opened[:3]]
        lines += _more(len(opened), 3)
    if changed:
        lines.append(f":pencil2: *Changed*: {plural(len(changed), 'folder')}")
        lines += [
            f"• {_code(e.folder)} now {_readable(e)} by {_esc(first_names(e.groups)) or 'named users'} "
            f"({plural(e.people, 'person', 'people')})"
            for e in changed[:3]
        ]
        lines += _more(len(changed), 3)
    if closed:
        lines += _closed_lines(group, closed)
    if not lines:
        return None
    last = events[-1]
    lines.append(f"_{_esc(last.actor or 'unknown')}, {slack_date(last.observed_at)}_")
    text = _cut("\n".join(lines), TEXT_MAX)
    blocks = [{"type": "section", "text": _mrkdwn(text)}]
    # Each exposure it reports, with every event of it in this update (an opening with the changes after it, or
    # several changes): so every event is told by one message, this reply or the root.
    of: dict[str, list[ExposureEvent]] = {}
    for event in events:
        if not (event.status is OPENED and event.preexisting):  # (the first run's root tells those)
            of.setdefault(event.exposure_id, []).append(event)
    told = [e for latest in (*(opened if widened else ()), *changed, *closed) for e in of.get(latest.exposure_id, ())]
    return SlackPost(post_key, _plain(lines[0]), blocks, _metadata(group.group_id, post_key, told), _ids(told))


def _closed_lines(group: GroupSnapshot, closed: list[ExposureEvent]) -> list[str]:
    d = digest(group, top=0)
    if not d.is_open:
        lasted = format_duration(d.duration_seconds or 0.0)
        if d.folders == 1:
            return [f":white_check_mark: *Closed* after {lasted}: {_code(closed[0].folder)} is restricted again"]
        return [f":white_check_mark: *Resolved*: all {d.folders:,} folders closed; the exposure lasted {lasted}"]
    lines = [f":white_check_mark: *Closed*: {plural(len(closed), 'folder')}, {d.open_folders:,} still open"]
    lines += [f"• {_code(e.folder)} after {format_duration(e.duration_seconds or 0.0)}" for e in closed[:3]]
    return lines + _more(len(closed), 3)


def _folders_text(d: GroupDigest, options: RenderOptions) -> str:
    if d.folders == 1:
        member = d.top[0]
        event = member.latest
        lines = [f"*Folder*\n{_code(event.folder)}"]
        if member.is_open:
            paths = shown_paths(event.folder, event.sample_paths, hide=options.hide_below_label)
            lines.append(f"{plural(event.paths_affected, 'path')} affected" + (", e.g." if paths else ""))
            lines += [_code(path) for path in paths[:3]]
            if event.kind is ExposureKind.NAMES:
                lines.append("_Names only: outsiders can list it, but read no file in it_")
        return "\n".join(lines)
    lines = [f"*Folders* ({d.folders:,}, {d.paths_affected:,} paths open)"]
    lines += [_folder_line(member) for member in d.top]
    return "\n".join(lines + _more(d.folders, len(d.top)))


def _folder_line(member: Member) -> str:
    event = member.latest
    if not member.is_open:
        return f"• {_code(event.folder)}: closed after {format_duration(event.duration_seconds or 0.0)}"
    return (
        f"• {_code(event.folder)}: {plural(event.paths_affected, 'path')}, "
        f"{plural(member.open_people, 'person', 'people')}"
        + (", names only" if event.kind is ExposureKind.NAMES else "")
    )


def _readable(event: ExposureEvent) -> str:
    return "readable" if event.kind is ExposureKind.CONTENTS else "listable (names only)"


def _replay_text(d: GroupDigest, options: RenderOptions) -> str:
    command = f"Replay: `permwatch timeline {d.first_exposure_id}`"
    if options.replay_url:
        url = options.replay_url.format(exposure_id=d.first_exposure_id, group_id=d.group_id)
        command = f"<{url}|Replay timeline> · `permwatch timeline {d.first_exposure_id}`"
    if d.folders > 1:
        command += f" (first of {d.folders:,}) · burst `{d.group_id}`"
    return command


def _metadata(group_id: str, post_key: str, told: Sequence[ExposureEvent] = ()) -> dict[str, Any]:
    """What finds a post again after a crash (its key), and which exposure events it tells (the first
    :data:`METADATA_EVENTS_MAX` ids, so an audit can map each open and close to its message)."""
    payload: dict[str, Any] = {"group_id": group_id, "post_key": post_key}
    if told:
        first = [e for e in told if e.status is not ExposureStatus.CHANGED]  # opens and closes first
        first += [e for e in told if e.status is ExposureStatus.CHANGED]
        payload["event_ids"] = [e.event_id for e in first[:METADATA_EVENTS_MAX]]
    return {"event_type": METADATA_EVENT_TYPE, "event_payload": payload}


def _more(total: int, shown: int) -> list[str]:
    return [f"_… and {total - shown:,} more_"] if total > shown else []


def slack_date(at: datetime) -> str:
    """Slack shows it in the reader's time zone; the fallback is UTC."""
    utc = at.astimezone(UTC)
    return f"<!date^{int(utc.timestamp())}^{{date_short_pretty}} {{time_secs}}|{utc:%Y-%m-%d %H:%M:%S} UTC>"


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    return "`" + _esc(text.replace("`", "'")) + "`"


def _codes(names: tuple[str, ...], limit: int = 3) -> str:
    shown = ", ".join(_code(name) for name in names[:limit])
    return shown + (f" +{len(names) - limit:,} more" if len(names) > limit else "")


def _plain(line: str) -> str:
    return (
        line.replace("*", "")
        .replace(":heavy_plus_sign: ", "")
        .replace(":pencil2: ", "")
        .replace(":white_check_mark: ", "")
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
