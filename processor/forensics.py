"""Forensics for the post-incident workshop: exposure windows, who could read, the breach-report draft.

Everything here is computed from verdicts or exposure events (both have the
same fields) and from an engine whose state a replay rebuilt up to a moment;
nothing reads the live system. Outputs name paths, groups and counts, never
file contents.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from permwatch.events import (
    TOPIC_DECISIONS,
    TOPIC_EXPOSURES,
    Decision,
    DecodeError,
    ExposureEvent,
    ExposureKind,
    ExposureStatus,
    Label,
    decode,
)
from permwatch.transport.base import Bus
from processor.engine import Engine
from processor.exposures import Verdict, audience
from processor.readers import inherited_from, share_admits
from processor.state import parent_of


def recorded_exposures(bus: Bus) -> Iterator[ExposureEvent]:
    """The exposure events on the ``exposures`` topic, in order (one folder's on one partition); what does
    not decode was never published by a processor and is skipped (the alerts stage dead-letters it)."""
    for record in bus.history([TOPIC_EXPOSURES]):
        try:
            event = decode(record.value)
        except DecodeError:
            continue
        if isinstance(event, ExposureEvent):
            yield event


@dataclass
class ExposureWindow:
    """From the first opening to the close (or still open) of one exposure."""

    exposure_id: str
    folder: str
    label: str
    severity: str
    opened_at: datetime
    closed_at: datetime | None
    detected_at: datetime
    max_people: int
    groups: list[str]
    users: list[str]
    """every outsider who could read at some point of the window, sorted"""
    users_complete: bool
    """False when the names come from records whose list was cut (``exposures --recorded``): a replay has them all"""
    actors: list[str]
    sample_paths: list[str]
    max_paths_affected: int
    cause_event_ids: list[str]
    kind: ExposureKind = ExposureKind.NAMES
    """``contents`` if an outsider could read a file at some point of the window, else ``names``"""
    changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration_seconds(self) -> float | None:
        return None if self.closed_at is None else (self.closed_at - self.opened_at).total_seconds()

    def key(self) -> tuple[str, str, datetime, datetime | None, int, tuple[str, ...]]:
        """What two runs must agree on for their windows to be called identical."""
        return (self.folder, self.label, self.opened_at, self.closed_at, self.max_people, tuple(self.groups))

    def to_json(self) -> dict[str, Any]:
        return {
            "exposure_id": self.exposure_id,
            "folder": self.folder,
            "label": self.label,
            "severity": self.severity,
            "kind": self.kind.value,
            "opened_at": self.opened_at.isoformat(),
            "closed_at": None if self.closed_at is None else self.closed_at.isoformat(),
            "duration_seconds": self.duration_seconds,
            "detected_at": self.detected_at.isoformat(),
            "max_people": self.max_people,
            "groups": self.groups,
            "users": self.users,
            "users_complete": self.users_complete,
            "actors": self.actors,
            "sample_paths": self.sample_paths,
            "max_paths_affected": self.max_paths_affected,
            "cause_event_ids": self.cause_event_ids,
            "changes": self.changes,
        }


def exposure_windows(
    exposures: Iterable[ExposureEvent],
    *,
    label: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ExposureWindow]:
    """Fold exposure events into one window per exposure id, in opening order.

    ``since``/``until`` keep the windows that overlap that span.
    """
    fold = WindowFold()
    for e in exposures:
        fold.add(e)
    return fold.windows(label=label, since=since, until=until)


class WindowFold:
    """:func:`exposure_windows` one event at a time, so a workshop snapshot can carry the windows still open
    at its place in the history and a replay of the rest continues them (:mod:`processor.workshop_store`)."""

    def __init__(self, open_windows: Iterable[ExposureWindow] = (), *, adopt: bool = False) -> None:
        """``adopt``: continue the windows given, not copies of them (they were just unpickled)."""
        self._windows: dict[str, ExposureWindow] = {
            w.exposure_id: w if adopt else copy.deepcopy(w) for w in open_windows
        }
        self._merged: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        """exposure id → the (names, groups) tuples last merged into its window: a replay's verdicts hand the same
        tuples again while the directory stands still (the engine's memos), and merging them again adds nothing"""

    def open_windows(self) -> list[ExposureWindow]:
        """Copies of the windows not closed yet, in the order they were first seen."""
        return [copy.deepcopy(w) for w in self._windows.values() if w.closed_at is None]

    def all_windows(self) -> list[ExposureWindow]:
        """Every window, open or closed, in the order they were first seen (not copied)."""
        return list(self._windows.values())

    def add(self, e: ExposureEvent) -> None:
        window = self._windows.get(e.exposure_id)
        if window is None:
            window = self._windows[e.exposure_id] = ExposureWindow(
                exposure_id=e.exposure_id,
                folder=e.folder,
                label=e.label.name,
                severity=e.label.severity.value,
                opened_at=e.opened_at,
                closed_at=None,
                detected_at=e.detected_at,
                max_people=0,
                groups=[],
                users=[],
                users_complete=True,
                actors=[],
                sample_paths=[],
                max_paths_affected=0,
                cause_event_ids=list(e.cause_event_ids),
            )
        names, complete = outsiders_of(e)
        window.changes.append(
            {
                # _value_, not .value: the enum's property costs a Python call, twice per verdict of a replay
                "status": e.status._value_,
                "kind": e.kind._value_,
                "at": e.observed_at.isoformat(),
                "people": e.people,
                "groups": list(e.groups),
                "actor": e.actor,
            }
        )
        if e.kind is ExposureKind.CONTENTS:
            window.kind = ExposureKind.CONTENTS  # (a close says contents if the exposure ever was)
        if e.status is ExposureStatus.CLOSED:
            window.closed_at = e.closed_at
            self._merged.pop(e.exposure_id, None)
            return
        window.max_people = max(window.max_people, e.people)
        window.max_paths_affected = max(window.max_paths_affected, e.paths_affected)
        merged = self._merged.get(e.exposure_id)
        if merged is None or merged[1] is not e.groups:
            window.groups = sorted(set(window.groups) | set(e.groups))
        if (merged is None or merged[0] is not names) and not set(names).issubset(window.users):
            window.users = sorted(set(window.users) | set(names))
        self._merged[e.exposure_id] = (names, e.groups)
        window.users_complete = window.users_complete and complete
        if e.actor and e.actor not in window.actors:
            window.actors.append(e.actor)
        if len(window.sample_paths) < 10:
            for path in e.sample_paths:
                if path not in window.sample_paths and len(window.sample_paths) < 10:
                    window.sample_paths.append(path)

    def windows(
        self, *, label: str | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> list[ExposureWindow]:
        """The windows overlapping ``since``..``until`` (of ``label``), in opening order."""
        return select_windows(self._windows.values(), label=label, since=since, until=until)


def select_windows(
    windows: Iterable[ExposureWindow],
    *,
    label: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ExposureWindow]:
    """The ``windows`` overlapping ``since``..``until`` (of ``label``), in opening order."""
    selected = [
        w
        for w in windows
        if (label is None or w.label == label)
        and (until is None or w.opened_at <= until)
        and (since is None or w.closed_at is None or w.closed_at >= since)
    ]
    return sorted(selected, key=lambda w: (w.opened_at, w.folder))


def outsiders_of(exposure: ExposureEvent) -> tuple[tuple[str, ...], bool]:
    """The outsiders' names an exposure gives, and whether that is all of them: a verdict (a replay) names
    every one; a recorded event names the first ``processor.max_users_listed`` and says if it cut the list."""
    if isinstance(exposure, Verdict):
        return exposure.all_users, True
    return exposure.users, not exposure.users_truncated


@dataclass(frozen=True)
class ReaderGrant:
    """One person who can read a path, and why."""

    user: str
    entry: str
    group: str | None
    chain: tuple[str, ...]
    allowed: bool


def who_can_read(engine: Engine, path: str) -> tuple[Label | None, list[ReaderGrant]]:
    """Effective readers of ``path`` in the engine's current state, with the grant chain of each.

    ``allowed`` says whether the label governing the path allows the person (None label: unlabelled).
    """
    state = engine.paths.get(path)
    folder = engine.folder_of(path)
    label = engine.tracker.folders[folder].label if folder is not None else None
    if state is None:
        return label, []
    evaluator = engine.evaluator
    directory = engine.directory
    readers = evaluator.readers(path, state)
    allowed = audience(label, directory) if label is not None else 0
    found: list[ReaderGrant] = []
    doors = _share_doors_above(engine, path)
    for via in evaluator.verdict(state).via:
        hit = via.people & readers
        entry = via.entry + _share_note(doors, via.people & ~hit)
        if via.ace is not None and entry.endswith(", inherited"):  # an NT ACE: say where it came from
            origin = inherited_from(engine.paths, path, via.ace)
            entry = f"{entry} from {origin}" if origin else entry
        if via.group is None:
            for user in directory.names(hit):
                found.append(ReaderGrant(user, entry, None, (), bool(directory.user_bit(user) & allowed)))
            continue
        for nested in directory.nested_groups(via.group):
            direct = directory.direct_members(nested) & hit
            hit &= ~direct
            chain = directory.chain(via.group, nested)
            for user in directory.names(direct):
                found.append(ReaderGrant(user, entry, nested, chain, bool(directory.user_bit(user) & allowed)))
    return label, sorted(found, key=lambda g: (g.allowed, g.user, g.entry))


def _share_doors_above(engine: Engine, path: str) -> list[tuple[str, int, list[str]]]:
    """The Samba shares served from above ``path`` (issue 16): (name, whom it admits, what narrowed it)."""
    doors = []
    for name, (at, gate) in sorted(engine.shares.items()):
        if at != path and path.startswith(at.rstrip("/") + "/"):
            admitted, narrowed = share_admits(gate, engine.directory)
            doors.append((name, admitted, narrowed))
    return doors


def _share_note(doors: list[tuple[str, int, list[str]]], kept_out: int) -> str:
    """ " [share 'ledning': valid users]" when a share above kept some of an entry's people out."""
    notes = [f"share '{name}': {', '.join(narrowed)}" for name, admitted, narrowed in doors if kept_out & ~admitted]
    return f" [{'; '.join(notes)}]" if notes else ""


def recorded_decisions(bus: Bus, exposure_id: str | None = None) -> list[Decision]:
    """The decisions on the ``decisions`` topic (of ``exposure_id``, when given), in order."""
    found = []
    for record in bus.history([TOPIC_DECISIONS]):
        try:
            event = decode(record.value)
        except DecodeError:
            continue
        if isinstance(event, Decision) and exposure_id in (None, event.exposure_id):
            found.append(event)
    return found


def breach_report(
    window: ExposureWindow, *, detected_at: datetime | None = None, decisions: Iterable[Decision] = ()
) -> str:
    """A Markdown breach-report draft for the data-protection officer (to be completed by a person)."""
    opened = window.opened_at
    closed = window.closed_at
    detected = detected_at or window.detected_at
    duration = duration_text(window.duration_seconds) if window.duration_seconds is not None else "still open"
    lines = [
        f"# Personal data breach report (draft): {window.folder}",
        "",
        "_Draft generated by permwatch from the recorded event history. Check every statement before filing; "
        "a breach notifiable under GDPR Art. 33 is due to the supervisory authority within 72 hours of "
        "becoming aware of it._",
        "",
        "## What was exposed",
        f"- Folder: `{window.folder}`",
        f"- Sensitivity label: **{window.label}** (severity {window.severity})",
        f"- Paths affected (at most): {window.max_paths_affected}"
        + (f"; for example {', '.join(f'`{p}`' for p in window.sample_paths[:5])}" if window.sample_paths else ""),
        "- Kind: "
        + (
            "contents: people outside the label could read files in it, or enter it (file names, sizes, owners "
            "and times)."
            if window.kind is ExposureKind.CONTENTS
            else "names only: people outside the label could list the folder's entries (file and folder names, "
            "which may identify people) but not enter it or read any file in it."
        ),
        "- Contents: not recorded by permwatch (it never reads file contents).",
        "",
        "## When",
        f"- Exposed from: {opened.isoformat()}",
        f"- Closed: {closed.isoformat() if closed else 'not closed at the time of this report'}",
        f"- Duration: {duration}",
        f"- Detected and alerted by permwatch: {detected.isoformat()} "
        f"({duration_text((detected - opened).total_seconds())} after the change)",
        "- Alert delivery: see the alert sinks' records (Slack thread, Alertmanager, JSONL).",
        "",
        "## Who could newly read it",
        f"- People outside the label who could read: {window.max_people} (at most, over the window)",
        f"- Through the groups: {', '.join(window.groups) if window.groups else 'none (individual entries or other)'}",
        f"- Who: {', '.join(window.users) if window.users else 'nobody named'}"
        + ("" if window.users_complete else " (the first names only: the record cut the list; replay for all)"),
        "",
        "## Who made the change",
        f"- {', '.join(window.actors) if window.actors else _NO_ACTOR}",
        f"- Cause events: {', '.join(window.cause_event_ids)}",
        "",
        "## Timeline",
        "| when | what | kind | people | groups |",
        "|---|---|---|---|---|",
    ]
    for change in window.changes:
        lines.append(
            f"| {change['at']} | {change['status']} | {change['kind']} | {change['people']} "
            f"| {', '.join(change['groups'])} |"
        )
    lines += _decision_lines(list(decisions))
    lines += [
        "",
        "## To complete",
        "- Whether anyone outside the label actually opened the files (access logs, not permissions).",
        "- Categories and approximate number of data subjects and records concerned.",
        "- Likely consequences and measures taken or proposed.",
        f"- Replay for the workshop: `permwatch timeline {window.exposure_id}`",
        "",
    ]
    return "\n".join(lines)


def _decision_lines(decisions: list[Decision]) -> list[str]:
    """The report's section on what was decided (acknowledged, approved, reverted), from the decisions topic."""
    if not decisions:
        return ["", "## Decisions", "- None recorded (nobody acknowledged, approved or reverted it in permwatch)."]
    lines = ["", "## Decisions", "| when | decision | by | via | until | reason / changes |", "|" + "---|" * 6]
    for d in decisions:
        detail = d.reason or ""
        if d.changes:
            detail = (detail + "; " if detail else "") + "; ".join(f"`{c}`" for c in d.changes)
        until = d.until.isoformat() if d.until else ""
        lines.append(f"| {d.observed_at.isoformat()} | {d.action.value} | {d.by} | {d.via} | {until} | {detail} |")
    return lines


_NO_ACTOR = 'not recorded (filesystem changes name their actor only with [[fs]] actors = "fanotify")'


def touches(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def ancestors(path: str) -> list[str]:
    out = []
    while path != "/":
        path = parent_of(path)
        out.append(path)
    return out


def duration_text(seconds: float) -> str:
    """A duration as people read it in a report: ``1 d 2 h 0 min 5 s``, ``3 min 0 s``, ``12 s``."""
    seconds = max(0, round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    if hours or days:
        parts.append(f"{hours} h")
    if minutes or hours or days:
        parts.append(f"{minutes} min")
    parts.append(f"{secs} s")
    return " ".join(parts)
