"""The timeline of one folder for the workshop: changes and exposure windows, as text, JSON or HTML.

The HTML page is self-contained (inline CSS and SVG, no scripts, no network)
so it opens from a USB stick on a projector laptop. Exposure windows are
drawn as bars (``class="exposure-bar"``) on a time axis with every recorded
change as a tick; a table below lists the changes in order.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from permwatch.events import (
    AnyEvent,
    Decision,
    DirectoryGroup,
    DirectoryUser,
    ExposureOpenedBy,
    FsPermissionEvent,
    LabelAssigned,
    SambaShare,
)
from processor.forensics import ExposureWindow, ancestors, touches
from processor.gcpause import gc_paused


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str
    subject: str
    summary: str
    event_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "kind": self.kind,
            "subject": self.subject,
            "summary": self.summary,
            "event_id": self.event_id,
        }


@dataclass
class Timeline:
    folder: str
    entries: list[TimelineEntry]
    windows: list[ExposureWindow]

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "entries": [e.to_json() for e in self.entries],
            "exposures": [w.to_json() for w in self.windows],
        }

    def to_text(self) -> str:
        lines = [f"Timeline of {self.folder}"]
        for w in self.windows:
            closed = w.closed_at.isoformat() if w.closed_at else "still open"
            lines.append(
                f"  exposure {w.exposure_id}: {w.opened_at.isoformat()} → {closed}, "
                f"{w.max_people} people, groups {', '.join(w.groups) or '-'}"
            )
        lines.append("")
        for e in self.entries:
            lines.append(f"{e.at.isoformat()}  {e.kind:<9} {e.summary}")
        return "\n".join(lines)


def relevant_to(folder: str) -> Callable[[AnyEvent], bool]:
    """Which input events belong on a folder's timeline: changes in it or to its ancestors, labels, directory."""
    above = set(ancestors(folder))

    def keep(event: AnyEvent) -> bool:
        if isinstance(event, FsPermissionEvent | SambaShare):  # a share's door gates its path and all beneath
            return touches(event.path, folder) or event.path in above
        if isinstance(event, LabelAssigned):
            return touches(event.path, folder)
        if isinstance(event, Decision):
            return event.folder == folder
        return isinstance(event, DirectoryUser | DirectoryGroup)

    return keep


TimelineItem = TimelineEntry | DirectoryUser | DirectoryGroup
"""What a replay keeps for a timeline: an entry made at once, or a directory event whose place on the
timeline depends on the exposures the replay finds (a snapshot belongs only when it caused one)."""


def timeline_items(folder: str) -> Callable[[AnyEvent], TimelineItem | None]:
    """A replay's ``keep`` for ``folder``'s timeline: entries for its changes and labels made as they
    pass (a million kept events would hold gigabytes; their entries a fraction), directory events kept."""
    relevant = relevant_to(folder)
    no_causes: set[str] = set()

    def item(event: AnyEvent) -> TimelineItem | None:
        if not relevant(event):
            return None
        if isinstance(event, DirectoryUser | DirectoryGroup):
            return event
        return _entry(event, no_causes)

    return item


def with_opens_marked(timeline: Timeline, marks: Sequence[ExposureOpenedBy]) -> Timeline:
    """``timeline`` with an ``opened`` entry for each outsider's open the live processor marked (issue 18)."""
    entries = [
        TimelineEntry(
            mark.observed_at,
            "opened",
            mark.path,
            f"opened {mark.path} by {mark.who}, outside the label{'' if mark.outsider else ' (maybe)'}, "
            f"while exposure {mark.exposure_id} was open ({mark.how}, {mark.actor.confidence})",
            mark.event_id,
        )
        for mark in marks
        if mark.folder == timeline.folder
    ]
    if not entries:
        return timeline
    merged = sorted([*timeline.entries, *entries], key=lambda entry: entry.at)
    return Timeline(timeline.folder, merged, timeline.windows)


def build_timeline(folder: str, observed: Sequence[TimelineItem | AnyEvent], windows: list[ExposureWindow]) -> Timeline:
    mine = [w for w in windows if w.folder == folder]
    # a directory snapshot belongs when it caused one of this folder's exposures (not another folder's: the
    # per-folder index of issue 21 replays only what concerns this folder, and must give the same timeline)
    causes = {cause for w in mine for cause in w.cause_event_ids}
    entries = []
    with gc_paused():  # an entry per change, next to the replay's large state
        for kept in observed:
            entry = kept if isinstance(kept, TimelineEntry) else _entry(kept, causes)
            if entry is not None:
                entries.append(entry)
    return Timeline(folder, entries, mine)


def _entry(event: AnyEvent, causes: set[str]) -> TimelineEntry | None:
    if isinstance(event, FsPermissionEvent):
        acl = ",".join([e.text() for e in event.acl]) if event.acl else ""
        mode = f" mode {event.mode:04o}" if event.mode is not None else ""
        # _value_, not .value (the enum's property is a Python call): this runs once per change replayed
        summary = f"{event.kind._value_} {event.path}{mode}" + (f" acl {acl}" if acl else "")
        if event.actor is not None:  # who made it, as the collector could tell (#18)
            summary += f" by {event.actor.text() or 'an unresolved process'} ({event.actor.confidence})"
        return TimelineEntry(event.observed_at, "change", event.path, summary, event.event_id)
    if isinstance(event, SambaShare):
        return TimelineEntry(event.observed_at, "share", event.path, share_summary(event), event.event_id)
    if isinstance(event, LabelAssigned):
        label = event.label.name if event.label else "(removed)"
        return TimelineEntry(event.observed_at, "label", event.path, f"label {label} on {event.path}", event.event_id)
    if isinstance(event, Decision):
        return TimelineEntry(event.observed_at, "decision", event.folder, decision_summary(event), event.event_id)
    if isinstance(event, DirectoryGroup | DirectoryUser) and (event.event_id in causes or event.change != "snapshot"):
        what = event.change
        if isinstance(event, DirectoryGroup) and (event.added or event.removed):
            what += f" +{','.join(event.added)}" if event.added else ""
            what += f" -{','.join(event.removed)}" if event.removed else ""
        by = f" by {event.actor}" if event.actor else ""
        kind = "group" if isinstance(event, DirectoryGroup) else "user"
        at = event.changed_at or event.observed_at
        return TimelineEntry(at, "directory", event.name, f"{kind} {event.name}: {what}{by}", event.event_id)
    return None


def decision_summary(decision: Decision) -> str:
    """One line for a decision: what, about which exposure, by whom (and why, until when, what changed)."""
    text = f"{decision.action.value} {decision.exposure_id} by {decision.by} ({decision.via})"
    if decision.until is not None:
        text += f" until {decision.until.isoformat()}"
    if decision.reason:
        text += f": {decision.reason}"
    if decision.changes:
        text += " [" + "; ".join(decision.changes) + "]"
    return text


# ------------------------------------------------------------------ HTML

_WIDTH, _LEFT, _RIGHT = 960, 160, 20
_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } .muted { color: #666; }
.exposure-bar { fill: #d7263d; } .tick { stroke: #1b998b; stroke-width: 2; }
.axis { stroke: #999; } text { font-size: 12px; fill: #333; }
table { border-collapse: collapse; margin-top: 1.5em; width: 100%; }
td, th { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
td.kind, td:first-child { white-space: nowrap; } code { font-size: 12px; }
"""


def render_html(timeline: Timeline, *, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    times = [e.at for e in timeline.entries] + [w.opened_at for w in timeline.windows]
    times += [w.closed_at or now for w in timeline.windows]
    start = min(times) if times else now
    end = max(times) if times else now
    span = max((end - start).total_seconds(), 1.0)
    start -= timedelta(seconds=span * 0.05)
    span *= 1.10

    def x(at: datetime) -> float:
        return _LEFT + (at - start).total_seconds() / span * (_WIDTH - _LEFT - _RIGHT)

    rows = []
    height = 40 + 30 * len(timeline.windows) + 50
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" role="img">']
    svg.append(f'<line class="axis" x1="{_LEFT}" y1="{height - 30}" x2="{_WIDTH - _RIGHT}" y2="{height - 30}"/>')
    svg.append(f'<text x="{_LEFT}" y="{height - 10}">{html.escape(start.isoformat(timespec="seconds"))}</text>')
    svg.append(
        f'<text x="{_WIDTH - _RIGHT}" y="{height - 10}" text-anchor="end">'
        f"{html.escape((start + timedelta(seconds=span)).isoformat(timespec='seconds'))}</text>"
    )
    for i, w in enumerate(timeline.windows):
        y = 30 + 30 * i
        x0, x1 = x(w.opened_at), x(w.closed_at or now)
        title = (
            f"{w.exposure_id}: {w.max_people} people, groups {', '.join(w.groups) or '-'}, "
            f"{w.opened_at.isoformat()} → {w.closed_at.isoformat() if w.closed_at else 'open'}"
        )
        svg.append(f'<text x="4" y="{y + 14}">{html.escape(w.label)}</text>')
        svg.append(
            f'<rect class="exposure-bar" data-exposure-id="{html.escape(w.exposure_id)}" x="{x0:.1f}" y="{y}" '
            f'width="{max(x1 - x0, 3):.1f}" height="20" rx="3"><title>{html.escape(title)}</title></rect>'
        )
    for e in timeline.entries:
        xe = x(e.at)
        svg.append(
            f'<line class="tick" x1="{xe:.1f}" y1="{height - 40}" x2="{xe:.1f}" y2="{height - 30}">'
            f"<title>{html.escape(e.summary)}</title></line>"
        )
        rows.append(
            f'<tr><td>{html.escape(e.at.isoformat(timespec="milliseconds"))}</td><td class="kind">{e.kind}</td>'
            f"<td><code>{html.escape(e.summary)}</code></td></tr>"
        )
    svg.append("</svg>")
    windows = "".join(
        f"<li><b>{html.escape(w.exposure_id)}</b>: {w.max_people} people via "
        f"{html.escape(', '.join(w.groups) or '-')}, open {html.escape(w.opened_at.isoformat())} → "
        f"{html.escape(w.closed_at.isoformat() if w.closed_at else 'still open')}"
        f"{html.escape(' by ' + ', '.join(w.actors)) if w.actors else ''}</li>"
        for w in timeline.windows
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>permwatch timeline: {html.escape(timeline.folder)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Timeline of <code>{html.escape(timeline.folder)}</code></h1>"
        f"<p class='muted'>Generated by permwatch from the recorded event history. "
        f"{len(timeline.windows)} exposure window(s), {len(timeline.entries)} recorded change(s).</p>"
        f"<ul>{windows}</ul>{''.join(svg)}"
        f"<table><thead><tr><th>when</th><th>what</th><th>detail</th></tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table></body></html>\n"
    )


def to_json_text(timeline: Timeline) -> str:
    return json.dumps(timeline.to_json(), indent=2)


def share_summary(event: SambaShare) -> str:
    """A Samba share's door in one line: "share ledning on /srv/share: valid users anna @ledning; 2 share ACEs"."""
    if event.deleted:
        return f"share {event.name} on {event.path}: gone"
    parts = [f"valid users {' '.join(event.valid_users)}"] if event.valid_users else []
    parts += [f"invalid users {' '.join(event.invalid_users)}"] if event.invalid_users else []
    if event.acl is None:
        parts.append(f"share ACL unreadable: {event.error}")
    else:
        denies = sum(ace.type == "deny" for ace in event.acl)
        parts.append(f"{len(event.acl)} share ACEs ({denies} deny)")
    return f"share {event.name} on {event.path}: {'; '.join(parts)}"
