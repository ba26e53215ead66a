"""The first-run entitlement report: what was already open to outsiders when permwatch first scanned a root.

Exposures the first baseline scan of a root found carry ``preexisting`` (the
processor marks them, :class:`processor.exposures.Cause`); the alerts stage
sends them as one alert that points here instead of one alert per folder. This
report reads the ``exposures`` topic (the record) and lists, per label, every
pre-existing exposure still open: the folder, how many people outside the label
can read it, through which groups and ACL entries, and its exposure id (for
``permwatch ack|approve|revert``). Names and counts only, never contents.
"""

from __future__ import annotations

from permwatch.events import ExposureEvent, ExposureStatus
from permwatch.transport.base import Bus
from processor.forensics import recorded_exposures


def preexisting_open(events: list[ExposureEvent]) -> list[ExposureEvent]:
    """The latest event of each pre-existing exposure not closed on the record, by label then folder."""
    latest: dict[str, ExposureEvent] = {}
    for event in events:
        if event.preexisting and event.sequence >= latest.get(event.exposure_id, event).sequence:
            latest[event.exposure_id] = event
    found = [e for e in latest.values() if e.status is not ExposureStatus.CLOSED]
    return sorted(found, key=lambda e: (e.label.name, e.folder))


def entries_of(exposure: ExposureEvent) -> tuple[str, ...]:
    """The ACL entries (or NT ACEs) that let outsiders read, once each, in the order the exposure names them."""
    return tuple(dict.fromkeys(grant.entry for grant in exposure.grants))


def render_report(found: list[ExposureEvent], *, label: str | None = None) -> str:
    shown = [e for e in found if label is None or e.label.name == label]
    lines = [
        "# Entitlement report: folders open to people outside their label when permwatch started",
        "",
        f"{len(shown)} pre-existing exposure(s) still open, found by the first scan of their root. Each is tracked "
        "like any other exposure: it closes when the permissions are fixed, and a further widening alerts. "
        "Decide on each with `permwatch ack|approve|revert EXPOSURE`.",
    ]
    labels = sorted({e.label.name for e in shown})
    for name in labels:
        mine = [e for e in shown if e.label.name == name]
        lines += [
            "",
            f"## Label `{name}` (severity {mine[0].label.severity.value}): {len(mine)} folder(s), "
            f"up to {max(e.people for e in mine)} people outside the label per folder",
            "",
            "| folder | people | groups | ACL entries | kind | exposure |",
            "|---|---|---|---|---|---|",
        ]
        for e in mine:
            lines.append(
                f"| `{e.folder}` | {e.people} | {', '.join(e.groups) or '-'} | {', '.join(entries_of(e)) or '-'} "
                f"| {e.kind.value} | `{e.exposure_id}` |"
            )
    if not labels:
        lines += ["", "Nothing pre-existing is open."]
    return "\n".join(lines) + "\n"


def entitlement_report(bus: Bus, *, label: str | None = None) -> str:
    return render_report(preexisting_open(list(recorded_exposures(bus))), label=label)
