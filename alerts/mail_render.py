"""E-mails for a group of exposures: pure functions, compared exactly by the unit tests.

A burst is one mail thread. Its first update is the *opening* mail (Message-ID
``<burst-…@domain>``); an update that closes the whole burst is the
*resolved* mail (``<burst-….resolved@domain>``); anything in between (the burst
widened, a folder's readers changed, some folders closed) is an *update* mail
whose id is derived from its events' ids. Every later mail has
``In-Reply-To`` and ``References`` pointing at the opening mail, so mail
clients thread them, and because every id is derived from the burst and its
events, a mail sent again after a crash has the same Message-ID (receiving
servers and clients drop it as a repeat).

Each mail has a plain-text body and the same content as HTML (escaped), for
``multipart/alternative``. Paths can be hidden below the labelled folder; the
people who can read are counted, never named; the actor is named, as in the
other sinks, unless the sink says ``actor = "omit"``.
"""

from __future__ import annotations

import email.policy
import hashlib
import html
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from alerts.digest import FIRST_RUN_NOTE, GroupDigest, digest, first_names, format_duration, news_by_status, plural
from alerts.grouping import GroupSnapshot, GroupUpdate
from alerts.redaction import shown_paths
from permwatch.events import ExposureEvent, ExposureKind, ExposureStatus


@dataclass(frozen=True)
class MailOptions:
    sender: str
    to: tuple[str, ...]
    domain: str
    subject_prefix: str = "[permwatch]"
    hide_below_label: bool = False
    replay_url: str | None = None
    top_folders: int = 10
    name_actor: bool = True


@dataclass(frozen=True)
class Mail:
    """One e-mail: ``kind`` is opened, update or resolved; ``digest_key`` the label it counts against in digest mode."""

    kind: str
    group_id: str
    message_id: str
    in_reply_to: str | None
    subject: str
    date: datetime
    text: str
    html: str
    digest_key: str


def root_message_id(group_id: str, domain: str) -> str:
    return f"<{group_id}@{domain}>"


def render_mail(update: GroupUpdate, options: MailOptions) -> Mail:
    group = update.group
    d = digest(group, top=options.top_folders)
    root = root_message_id(group.group_id, options.domain)
    opened_now = {e.exposure_id for e in update.events if e.status is ExposureStatus.OPENED}
    # the burst's first mail: every exposure of it opened in this update (a burst opened and closed within one
    # batch gets only this mail, which then says "Resolved")
    if all(m.exposure_id in opened_now for m in group.members):
        kind, message_id, in_reply_to = "opened", root, None
    elif not d.is_open:
        kind, message_id, in_reply_to = "resolved", f"<{group.group_id}.resolved@{options.domain}>", root
    else:
        tag = hashlib.sha256("\n".join(e.event_id for e in update.events).encode()).hexdigest()[:16]
        kind, message_id, in_reply_to = "update", f"<{group.group_id}.{tag}@{options.domain}>", root
    title = headline(d)
    subject = " ".join(f"{options.subject_prefix} {title}".split())  # no line break from a name may split a header
    if kind != "opened":
        subject = "Re: " + subject
    news = [] if kind == "opened" else news_lines(group, update.events)
    fact_rows = facts(d, name_actor=options.name_actor)
    folders = folder_lines(d, hide_below_label=options.hide_below_label)
    footer = _footer(d, options)
    text = "\n".join(
        [title, ""]
        + ([*news, ""] if news else [])
        + [f"{name}: {value}" for name, value in fact_rows]
        + ["", *folders, "", *footer]
    )
    html_body = _html(title, news, fact_rows, folders, footer)
    when = max(e.observed_at for e in update.events) if update.events else d.opened_at
    return Mail(kind, group.group_id, message_id, in_reply_to, subject, when, text + "\n", html_body, d.labels[0])


def to_mime(mail: Mail, options: MailOptions) -> EmailMessage:
    """The MIME message: multipart/alternative (text, then HTML), threading headers, a boundary derived from the id."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = options.sender
    message["To"] = ", ".join(options.to)
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(mail.date.astimezone(UTC))
    message["Message-ID"] = mail.message_id
    if mail.in_reply_to is not None:
        message["In-Reply-To"] = mail.in_reply_to
        message["References"] = mail.in_reply_to
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies to an alert
    message["X-Permwatch-Burst"] = mail.group_id
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    message.set_boundary("permwatch-" + hashlib.sha256(mail.message_id.encode()).hexdigest()[:24])
    return message


# Python folds a header longer than 78 characters before its first word when that word holds a special such as
# "[" ("Subject:\n [permwatch] …"), and a reader unfolding it sees the subject start with a space. RFC 5322 allows
# 998 characters a line; 78 is only advised.
_POLICY = email.policy.default.clone(max_line_length=998)


def digest_mail(mails: list[Mail], key: str, options: MailOptions) -> Mail:
    """Several held mails of one label as one: their texts in order, threaded on nothing (it spans bursts)."""
    ids = "\n".join(m.message_id for m in mails)
    tag = hashlib.sha256(ids.encode()).hexdigest()[:16]
    subject = " ".join(f"{options.subject_prefix} Digest: {plural(len(mails), 'alert')} for label {key}".split())
    separator = "\n" + "-" * 72 + "\n\n"
    text = separator.join(m.text for m in mails)
    parts = "<hr>".join(_html_inner(m.html) for m in mails)
    body = f'<!DOCTYPE html><html><body style="font-family:sans-serif">{parts}</body></html>\n'
    return Mail(
        "digest",
        mails[0].group_id,
        f"<digest.{tag}@{options.domain}>",
        None,
        subject,
        max(m.date for m in mails),
        text,
        body,
        key,
    )


# ---------------------------------------------------------------- pieces


def headline(d: GroupDigest) -> str:
    """One line: how bad, how many folders, readable by whom, which label; or resolved after how long."""
    what = plural(d.folders, "folder")
    readers = first_names(d.readers) or "people outside the label"
    labels = first_names(d.labels)
    readable = "listable (names only)" if d.names_only else "readable"
    if d.is_open and d.first_run:  # what the first scan found: one mail or card, pointing to the report
        return f"{d.first_run_headline}, {readable} by {readers} (label {labels})"
    if d.is_open:
        return f"{d.severity.value.capitalize()} exposure: {what} {readable} by {readers} (label {labels})"
    lasted = format_duration(d.duration_seconds or 0.0)
    return f"Resolved after {lasted}: {what} no longer {readable} by {readers} (label {labels})"


def facts(d: GroupDigest, *, name_actor: bool = True) -> list[tuple[str, str]]:
    """Name and value of what a reader checks first: status, severity, label, readers, kind, people, actor (unless
    ``name_actor`` is off: the sink's ``actor = "omit"``), when."""
    if d.is_open:
        status = "Open" if d.open_folders == d.folders else f"Open: {d.open_folders:,} of {d.folders:,} folders"
    else:
        status = f"Resolved after {format_duration(d.duration_seconds or 0.0)}"
    people = f"{d.people_max:,}" if d.folders == 1 else f"up to {d.people_max:,} per folder"
    rows = [
        ("Status", status),
        ("Severity", d.severity.value.capitalize()),
        ("Label", first_names(d.labels)),
        ("Readable by", first_names(d.readers, limit=10) or "users named in the ACL"),
        ("Kind", kind_text(d)),
        ("People outside the label", people),
        ("Changed by", d.actor_text or "unknown"),
        ("When", f"{d.opened_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"),
    ]
    return [row for row in rows if name_actor or row[0] != "Changed by"]


def kind_text(d: GroupDigest) -> str:
    """Names only or contents (docs/events.md "Kinds"), in the console sink's words; a burst can hold both."""
    it = "it" if d.counted_folders == 1 else "them"
    if d.names_only:
        return f"Names only: outsiders can list the names in {it} (no file in {it} readable)"
    if not d.names_folders:
        return f"Contents: outsiders can read files in {it}"
    contents = d.counted_folders - d.names_folders
    return f"Contents in {plural(contents, 'folder')}; names only (no file readable) in {d.names_folders:,}"


def folder_lines(d: GroupDigest, *, hide_below_label: bool) -> list[str]:
    """The folder (with a few paths) or the top folders of a burst, indented lines under a heading."""
    if d.folders == 1:
        member = d.top[0]
        event = member.latest
        lines = [f"Folder: {event.folder}"]
        if member.is_open:
            paths = shown_paths(event.folder, event.sample_paths, hide=hide_below_label)
            lines.append(f"{plural(event.paths_affected, 'path')} affected" + (", e.g." if paths else ""))
            lines += [f"  {path}" for path in paths[:3]]
        return lines
    lines = [f"Folders ({d.folders:,}, {d.paths_affected:,} paths open):"]
    for member in d.top:
        event = member.latest
        if member.is_open:
            lines.append(
                f"  {event.folder}: {plural(event.paths_affected, 'path')}, "
                f"{plural(member.open_people, 'person', 'people')}" + _names_only(event)
            )
        else:
            lines.append(f"  {event.folder}: closed after {format_duration(event.duration_seconds or 0.0)}")
    if d.folders > len(d.top):
        lines.append(f"  … and {d.folders - len(d.top):,} more")
    return lines


def news_lines(group: GroupSnapshot, events: tuple[ExposureEvent, ...]) -> list[str]:
    """What ``events`` changed in the burst: widened, changed, closed (shared with the Teams cards).

    Every event is told: an exposure that opened in this update is news as an opening, shown as it is now, however
    many changes followed in the same update (a backlog after a restart brings them together), and one that closed
    again within it is a close that says so; an exposure changed several times is shown as it is now."""
    latest_opened, changed, closed = news_by_status(events)
    opening = {e.exposure_id for e in events if e.status is ExposureStatus.OPENED}
    opened = latest_opened + [e for e in changed if e.exposure_id in opening]
    changed = [e for e in changed if e.exposure_id not in opening]
    lines: list[str] = []
    if opened:
        lines.append(f"Widened: {plural(len(opened), 'more folder')} now readable, {len(group.members):,} in all")
        lines += [f"  {e.folder} by {first_names(e.groups) or 'named users'}{_names_only(e)}" for e in opened[:3]]
        lines += _more(len(opened), 3)
    if changed:
        lines.append(f"Changed: {plural(len(changed), 'folder')}")
        lines += [
            f"  {e.folder} now {_readable(e)} by {first_names(e.groups) or 'named users'} "
            f"({plural(e.people, 'person', 'people')})"
            for e in changed[:3]
        ]
        lines += _more(len(changed), 3)
    if closed:
        lines.append(f"Closed: {plural(len(closed), 'folder')}")
        lines += [
            f"  {e.folder} after {format_duration(e.duration_seconds or 0.0)}"
            + (" (opened and closed again in this update)" if e.exposure_id in opening else "")
            for e in closed[:3]
        ]
        lines += _more(len(closed), 3)
    return lines


def _readable(event: ExposureEvent) -> str:
    return "listable (names only)" if event.kind is ExposureKind.NAMES else "readable"


def _names_only(event: ExposureEvent) -> str:
    return ", names only" if event.kind is ExposureKind.NAMES else ""


def _footer(d: GroupDigest, options: MailOptions) -> list[str]:
    lines = [FIRST_RUN_NOTE] if d.first_run and d.is_open else []
    lines += [
        f"Replay: permwatch timeline {d.first_exposure_id}" + (f" (first of {d.folders:,})" if d.folders > 1 else "")
    ]
    if options.replay_url:
        lines.append(options.replay_url.format(exposure_id=d.first_exposure_id, group_id=d.group_id))
    lines.append(f"Burst: {d.group_id}")
    return lines


def _more(total: int, shown: int) -> list[str]:
    return [f"  … and {total - shown:,} more"] if total > shown else []


def _html(headline: str, news: list[str], facts: list[tuple[str, str]], folders: list[str], footer: list[str]) -> str:
    rows = "".join(
        f'<tr><th align="left" style="padding-right:1em">{html.escape(name)}</th><td>{html.escape(value)}</td></tr>'
        for name, value in facts
    )
    parts = [f"<h2>{html.escape(headline)}</h2>"]
    if news:
        parts.append("<p>" + "<br>".join(html.escape(line.strip()) for line in news) + "</p>")
    parts.append(f"<table>{rows}</table>")
    parts.append("<p>" + "<br>".join(_html_line(line) for line in folders) + "</p>")
    parts.append('<p style="color:#666">' + "<br>".join(html.escape(line) for line in footer) + "</p>")
    return f'<!DOCTYPE html><html><body style="font-family:sans-serif">{"".join(parts)}</body></html>\n'


def _html_line(line: str) -> str:
    if line.startswith("  "):
        return f"<code>{html.escape(line.strip())}</code>"
    return html.escape(line)


def _html_inner(document: str) -> str:
    start = document.find(">", document.find("<body")) + 1
    end = document.rfind("</body>")
    return document[start:end]
