"""What the SOC sinks (Teams, e-mail, syslog) may deliver: an allow-list of fields, and their words.

Issue 20 asks that nothing personal leaves beyond paths and group names. A
spot check for a planted name proves only that one name is absent; this
checks the delivered payload as a whole. Each sink's fields must be among the
ones it documents (``user.name`` / ``suser`` / "Changed by" only with
``actor = "name"``), and every text in it, once the values it may carry are
taken out (the folders and the paths as shown, group and label names, ids,
numbers, times, configured addresses, and the actor when named), may hold only
the renders' own words (:data:`VOCABULARY`). A user name, a file name below
the labelled folder, a file's contents or any text nobody allowed leaves a word
outside it, and the check names that word and where it was.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Iterator
from email.message import EmailMessage
from typing import Any

from permwatch.events import ExposureEvent


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# The words the three renders write themselves (templates, field names, fixed values), lower case.
VOCABULARY = _names(
    """
    affected after alerts all and burst by can changed closed contents critical low medium high digest e exposure
    file files first folder folders for g h min s d in it kind label list listable longer more names no now of only
    open outside outsiders path paths people person per permwatch re read readable replay resolved severity status
    the them timeline to up utc when widened update card users named acl unknown
    event events whose actor could not be pidfd best effort smb audit log
    """
)
"""The words the e-mail and Teams renders write themselves (``alerts/mail_render.py``, ``alerts/teams.py``), lower
case: headlines, fact names, fixed values, durations, the actor's confidence ("best effort", "SMB audit")."""

SYSLOG_WORDS = _names(
    """
    cef directory dir exposure opened changed closed restricted folder readable listable names only outside its label
    exposed readers no file people the via by is again after min s h d users named in acl now does not allow groups
    that can read it list alert change monitor permwatch critical high medium low contents
    """
)
"""The words the syslog renders write themselves (``alerts/syslog.py``): summaries, CEF names, ECS constants."""
BURST_WORDS = SYSLOG_WORDS | VOCABULARY | _names("their exposures this mixed")
"""... and those of a ``messages = "burst"`` summary, which says the e-mail's headline."""

ECS_FIELDS = _names(
    """
    @timestamp ecs.version message event.kind event.category[] event.type[] event.action event.id event.dataset
    event.module event.provider event.severity event.start event.end event.duration event.reason file.path
    file.type group.name[] rule.name observer.vendor observer.product observer.version observer.type
    permwatch.exposure.id permwatch.exposure.status permwatch.exposure.kind permwatch.exposure.people
    permwatch.exposure.paths_affected permwatch.exposure.sample_paths[] permwatch.label.name
    permwatch.label.severity permwatch.burst.id
    """
)
ECS_BURST_FIELDS = _names(
    """
    @timestamp ecs.version message event.kind event.category[] event.type[] event.action event.id event.dataset
    event.module event.provider event.severity event.start event.end event.duration event.reason group.name[]
    rule.name observer.vendor observer.product observer.version observer.type permwatch.burst.id
    permwatch.burst.status permwatch.burst.kind permwatch.burst.folders permwatch.burst.open_folders
    permwatch.burst.people_max permwatch.burst.paths_affected permwatch.burst.top_folders[]
    permwatch.burst.first_exposure_id permwatch.burst.update.opened permwatch.burst.update.changed
    permwatch.burst.update.closed permwatch.label.name permwatch.label.severity
    """
)
"""The fields of a syslog sink's ``messages = "burst"`` summary."""
CEF_KEYS = _names(
    """
    rt act externalId filePath fileType cs1Label cs1 cs2Label cs2 cs3Label cs3 cs4Label cs4 cs5Label cs5
    cn1Label cn1 cn2Label cn2 cn3Label cn3 start end msg
    """
)
CEF_LABELS = _names(
    "label readableByGroups wasReadableByGroups burstId samplePaths exposureKind peopleOutsideLabel pathsAffected "
    "topFolders folders"
)
MAIL_HEADERS = _names(
    """
    From To Subject Date Message-ID In-Reply-To References Auto-Submitted X-Permwatch-Burst MIME-Version
    Content-Type Content-Transfer-Encoding
    """.lower()
)
TEAMS_KEYS = _names(
    """
    type attachments contentType contentUrl content $schema version body msteams width text weight size color
    wrap isSubtle facts title value actions url
    """
)
_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?Z?")
_WORD = re.compile(r"[^\W\d_]+")


def allowed_values(
    events: Iterable[ExposureEvent],
    *,
    burst_id: str,
    actor: bool,
    shown_paths: Iterable[str] = (),
    extra: Iterable[str] = (),
) -> set[str]:
    """The values a payload about ``events`` may carry: folders, the sample paths as shown, groups, labels, ids,
    the burst id, ``extra`` (configured addresses, URLs), and the actor only when the sink names it."""
    values = {burst_id, *shown_paths, *extra}
    for event in events:
        values |= {event.folder, event.exposure_id, event.event_id, event.label.name, *event.groups}
        if actor and event.actor:
            values.add(event.actor)
    return values


def foreign_words(text: str, allowed: Iterable[str], vocabulary: frozenset[str] = VOCABULARY) -> set[str]:
    """The words of ``text`` that are neither in an allowed value nor in ``vocabulary``."""
    for value in sorted(set(allowed), key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", " ", text)
    text = _TIME.sub(" ", text)
    return {word for word in _WORD.findall(text) if word.lower() not in vocabulary}


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf of a JSON document with its dotted path (``[]`` for a list's items)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from leaves(inner, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for inner in value:
            yield from leaves(inner, path + "[]")
    else:
        yield path, value


def ecs_problems(document: dict[str, Any], allowed: set[str], *, actor: bool, burst: bool = False) -> list[str]:
    """``burst``: a ``messages = "burst"`` summary."""
    fields = (ECS_BURST_FIELDS if burst else ECS_FIELDS) | ({"user.name"} if actor else set())
    words = BURST_WORDS if burst else SYSLOG_WORDS
    problems = []
    for path, value in leaves(document):
        if path not in fields:
            problems.append(f"ECS field {path} is not on the allow-list")
        elif burst and path == "event.id":  # the update's id: a hash of its events' ids
            if not re.fullmatch(r"[0-9a-f]{16}", value):
                problems.append(f"ECS event.id {value!r} is not an update id")
        elif isinstance(value, str) and (foreign := foreign_words(value, allowed, words)):
            problems.append(f"ECS {path}: {sorted(foreign)}")
    return problems


def cef_problems(msg: str, allowed: set[str], *, actor: bool) -> list[str]:
    """``msg``: the CEF message (header and extension)."""
    header = msg.split("|", 7)
    problems = [
        f"CEF header {part!r}: {sorted(w)}" for part in header[:7] if (w := foreign_words(part, allowed, SYSLOG_WORDS))
    ]
    keys = CEF_KEYS | ({"suser"} if actor else set())
    # an extension is key=value pairs, values with escaped '=': split before each unescaped " key="
    for pair in re.split(r" (?=\w+=)", header[7]):
        key, _, value = pair.partition("=")
        value = value.replace("\\=", "=").replace("\\\\", "\\")
        if key not in keys:
            problems.append(f"CEF key {key} is not on the allow-list")
        elif key.endswith("Label"):
            if value not in CEF_LABELS:
                problems.append(f"CEF {key}={value} is not a known label")
        elif words := foreign_words(value.replace(",", " "), allowed, SYSLOG_WORDS):
            problems.append(f"CEF {key}: {sorted(words)}")
    return problems


def mail_problems(message: EmailMessage, allowed: set[str], *, actor: bool) -> list[str]:
    problems = [f"mail header {name} is not on the allow-list" for name in message if name.lower() not in MAIL_HEADERS]
    if words := foreign_words(str(message["Subject"]), allowed):
        problems.append(f"Subject: {sorted(words)}")
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    page = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    if not actor and "Changed by" in text + page:
        problems.append("the mail names who changed it though the sink omits the actor")
    tags = set(re.findall(r"</?([a-z0-9]+)", page))
    if not tags <= {"html", "body", "h2", "p", "br", "table", "tr", "th", "td", "code", "hr"}:
        problems.append(f"HTML elements not on the allow-list: {sorted(tags)}")
    page_text = html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<!DOCTYPE[^>]*>", " ", page)))
    for where, body in (("text", text), ("HTML", page_text)):
        if words := foreign_words(body, allowed):
            problems.append(f"mail {where}: {sorted(words)}")
    return problems


def teams_problems(body: dict[str, Any], allowed: set[str], *, actor: bool) -> list[str]:
    problems = []
    for path, value in leaves(body):
        key = path.rsplit(".", 1)[-1].removesuffix("[]")
        if key not in TEAMS_KEYS:
            problems.append(f"Teams key {path} is not on the allow-list")
        elif key in ("text", "title", "value") and isinstance(value, str):
            unescaped = re.sub(r"\\(.)", r"\1", value)  # the sink escapes Markdown
            if words := foreign_words(unescaped, allowed):
                problems.append(f"Teams {path}: {sorted(words)}")
            if value == "Changed by" and not actor:
                problems.append("the card names who changed it though the sink omits the actor")
        elif key == "url" and not any(value == a for a in allowed):
            problems.append(f"Teams {path}: {value!r} is not an allowed URL")
    return problems
