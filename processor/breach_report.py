"""The breach report the data-protection officer files: GDPR Art. 33(3) point by point, in Markdown and HTML.

:func:`breach_facts` gathers what the record knows of one exposure: its events
(the label with the data owner's statement of what personal data the folder
holds, who could read, who changed and who closed it, when it was detected),
the opens that fell inside it (:mod:`processor.opens`), and the contact points
from the configuration. :func:`report_sections` lays those facts out under
Art. 33(3) (a) nature, categories and numbers, (b) contact points, (c) likely
consequences, with the facts, (d) measures taken, with the 72-hour deadline
counted from detection and a section for information supplied later
(Art. 33(4)), listing what the record could not say. :func:`render_markdown`
and :func:`render_html` (one self-contained page, no external resources) write
the same sections. Pure: the time the report is made is an argument. Never
file contents: paths, names, counts and times only.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from permwatch.config import ContactConfig
from permwatch.events import ExposureEvent, ExposureKind, ExposureStatus, Label
from processor.forensics import duration_text
from processor.opens import MarkedOpen

DEADLINE = timedelta(hours=72)
"""Art. 33(1): without undue delay and, where feasible, not later than 72 hours after becoming aware of it."""
MAX_OPENS_LISTED = 50


@dataclass(frozen=True)
class BreachFacts:
    """What the record says of one exposure, for its report."""

    exposure_id: str
    folder: str
    label: Label
    kind: ExposureKind
    opened_at: datetime
    detected_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    changed_by: tuple[str, ...]
    max_people: int
    groups: tuple[str, ...]
    outsiders: tuple[str, ...]
    outsiders_complete: bool
    max_paths: int
    sample_paths: tuple[str, ...]
    opens: tuple[MarkedOpen, ...]
    controller: ContactConfig | None
    dpo: ContactConfig | None
    generated_at: datetime

    @property
    def deadline(self) -> datetime:
        return self.detected_at + DEADLINE

    @property
    def outsider_opens(self) -> tuple[MarkedOpen, ...]:
        return tuple(o for o in self.opens if o.outsider is True)

    @property
    def unknown_opens(self) -> tuple[MarkedOpen, ...]:
        return tuple(o for o in self.opens if o.outsider is None)


def breach_facts(
    events: Iterable[ExposureEvent],
    opens: Iterable[MarkedOpen],
    *,
    controller: ContactConfig | None,
    dpo: ContactConfig | None,
    generated_at: datetime,
) -> BreachFacts:
    """The facts of one exposure from its recorded events (any order) and the opens inside it."""
    ordered = sorted(events, key=lambda e: e.sequence)
    if not ordered:
        raise ValueError("an exposure with no events has nothing to report")
    first = ordered[0]
    live = [e for e in ordered if e.status is not ExposureStatus.CLOSED]
    closed = next((e for e in ordered if e.status is ExposureStatus.CLOSED), None)
    changed_by = tuple(
        dict.fromkeys(
            f"{e.actor} ({_CONFIDENCE[e.actor_confidence]})" if e.actor_confidence in _CONFIDENCE else e.actor
            for e in live
            if e.actor
        )
    )
    unresolved = max((e.actor_unresolved for e in ordered), default=0)
    if unresolved:
        changed_by += (f"{_count(unresolved, 'event')} whose actor could not be resolved",)
    outsiders = sorted({name for e in live for name in e.users})
    samples: list[str] = []
    for event in live:
        samples += [p for p in event.sample_paths if p not in samples]
    return BreachFacts(
        exposure_id=first.exposure_id,
        folder=first.folder,
        label=ordered[-1].label,
        kind=ExposureKind.CONTENTS if any(e.kind is ExposureKind.CONTENTS for e in ordered) else ExposureKind.NAMES,
        opened_at=first.opened_at,
        detected_at=first.detected_at,
        closed_at=None if closed is None else closed.closed_at,
        closed_by=None if closed is None else closed.actor,
        changed_by=changed_by,
        max_people=max((e.people for e in live), default=0),
        groups=tuple(sorted({g for e in live for g in e.groups})),
        outsiders=tuple(outsiders),
        outsiders_complete=not any(e.users_truncated for e in live),
        max_paths=max((e.paths_affected for e in live), default=0),
        sample_paths=tuple(samples[:10]),
        opens=tuple(o for o in opens if o.exposure_id == first.exposure_id),
        controller=controller,
        dpo=dpo,
        generated_at=generated_at,
    )


# ------------------------------------------------------------------ layout


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Section:
    """One heading: its facts as (name, value) pairs, then maybe a table, then maybe a note."""

    title: str
    items: tuple[tuple[str, str], ...]
    table: Table | None = None
    note: str | None = None


@dataclass(frozen=True)
class Report:
    title: str
    preamble: str
    sections: tuple[Section, ...] = field(default_factory=tuple)


def report_sections(facts: BreachFacts) -> Report:
    """The report's content, laid out once for both renderings."""
    later: list[str] = []
    """what the report cannot say yet, in the order its sections ask (Art. 33(4))"""
    a = _nature_section(facts, later)
    b = Section(
        "(b) Contact points (Art. 33(3)(b))",
        (
            ("Controller", _contact(facts.controller) or _missing(later, "Controller", "breach_report.controller")),
            ("Data protection officer", _contact(facts.dpo) or _missing(later, "DPO contact", "breach_report.dpo")),
        ),
    )
    c = _consequences_section(facts, later)
    d = _measures_section(facts, later)
    later.append("Further measures taken or proposed to mitigate adverse effects")
    remaining = facts.deadline - facts.generated_at
    due = (
        f"{duration_text(remaining.total_seconds())} left"
        if remaining.total_seconds() >= 0
        else f"overdue by {duration_text(-remaining.total_seconds())}"
    )
    deadline = Section(
        "Deadline (Art. 33(1))",
        (
            ("Aware since (detection)", _time(facts.detected_at)),
            (
                "Notify the supervisory authority by",
                f"{_time(facts.deadline)} (72 hours; {due} at {_time(facts.generated_at)})",
            ),
        ),
    )
    phases = Section(
        "Information supplied later (Art. 33(4))",
        tuple((f"{i}.", item) for i, item in enumerate(later, 1)),
        Table(("date supplied", "information"), (("", ""),)),
        "Where the information cannot be given at once, it may be provided in phases without undue further delay.",
    )
    preamble = (
        f"Exposure {facts.exposure_id}. Draft generated by permwatch at {_time(facts.generated_at)} from the recorded "
        "event history; check every statement before filing. permwatch never reads file contents."
    )
    return Report(f"Personal data breach notification: {facts.folder}", preamble, (deadline, a, b, c, d, phases))


def _nature_section(facts: BreachFacts, later: list[str]) -> Section:
    """(a): what happened and to whose data; what the label does not state goes to ``later``."""
    pd = facts.label.personal_data

    def stated(value: str | None, what: str, key: str) -> str:
        if value:
            return value
        later.append(f"{what} (not stated: personal_data.{key} of label {facts.label.name})")
        return "not stated"

    can = (  # contents: a file readable, or a folder entered (r-x), which shows its files' details (ls -l)
        "read files in it, or at least see their names, sizes, owners and times"
        if facts.kind is ExposureKind.CONTENTS
        else "list the names of its files and folders (no file in it could be read)"
    )
    nature = (
        f"Confidentiality breach: a permission change let {_count(facts.max_people, 'person', 'people')} outside "
        f"the label {facts.label.name} {can}."
    )
    return Section(
        "(a) Nature of the breach, data subjects and records concerned (Art. 33(3)(a))",
        (
            ("Nature", nature),
            ("Folder", facts.folder),
            ("Sensitivity label", f"{facts.label.name} (severity {facts.label.severity.value})"),
            (
                "Paths readable by outsiders",
                f"{facts.max_paths:,} at most"
                + (f"; for example {', '.join(facts.sample_paths[:5])}" if facts.sample_paths else ""),
            ),
            (
                "Categories of personal data",
                stated(_list(pd.data_categories if pd else ()), "Categories of personal data", "data_categories"),
            ),
            (
                "Special categories (Art. 9)",
                _list(pd.special_categories) if pd and pd.special_categories else "none stated",
            ),
            (
                "Categories of data subjects",
                stated(_list(pd.subject_categories if pd else ()), "Categories of data subjects", "subject_categories"),
            ),
            (
                "Approximate number of data subjects",
                stated(_approx(pd.approx_subjects if pd else None), "Number of data subjects", "approx_subjects"),
            ),
            (
                "Approximate number of personal data records",
                stated(_approx(pd.approx_records if pd else None), "Number of records", "approx_records"),
            ),
            ("Data owner", stated(pd.data_owner if pd else None, "Data owner", "data_owner")),
        ),
    )


def _consequences_section(facts: BreachFacts, later: list[str]) -> Section:
    """(c): who could read, and who opened files while they could."""
    outsider_opens = facts.outsider_opens
    openers = sorted({o.who for o in outsider_opens})
    names = _list(facts.outsiders) or "none named"
    if not facts.outsiders_complete:
        names += " (the record lists the first names only; permwatch exposures --json names all)"
    c_items = [
        ("Outsiders who could read", _count(facts.max_people, "person", "people") + " at most"),
        ("Through the groups", _list(facts.groups) or "none (entries naming users, or everyone)"),
        ("Who", names),
        ("Exposed", f"from {_time(facts.opened_at)} to {_time(facts.closed_at) if facts.closed_at else 'now (open)'}"),
        (
            "Outsiders who opened files while exposed",
            f"{_count(len(openers), 'person', 'people')}, {_count(len(outsider_opens), 'open')}"
            + (
                f", first at {_time(outsider_opens[0].at)}, last at {_time(outsider_opens[-1].at)}"
                if outsider_opens
                else ""
            ),
        ),
        (
            "Opens by people the label allows, in the same window",
            f"{sum(1 for o in facts.opens if o.outsider is False):,} (not a breach)",
        ),
    ]
    if facts.unknown_opens:
        c_items.append(("Opens by people the record cannot place", f"{len(facts.unknown_opens):,} (check by hand)"))
    later.append("Likely consequences for the data subjects: the controller's assessment")
    listed = [*outsider_opens, *facts.unknown_opens][:MAX_OPENS_LISTED]
    return Section(
        "(c) Likely consequences (Art. 33(3)(c))",
        tuple(c_items),
        Table(
            ("when", "who", "path", "how", "attributed"),
            tuple(
                (_time(o.at), o.who + ("" if o.outsider else " (?)"), o.path, o.how, _confidence(o.confidence))
                for o in sorted(listed, key=lambda o: (o.at, o.path))
            ),
        )
        if listed
        else None,
        "Opens are recorded only where the collector watches opens ([[fs]] opens = fanotify); an open over SMB is seen "
        "as smbd's unless Samba's audit log is read. The facts above are what the record shows; the assessment "
        "of consequences is the controller's.",
    )


def _measures_section(facts: BreachFacts, later: list[str]) -> Section:
    """(d): detection, who made the change, and its closing."""
    detection = facts.detected_at - facts.opened_at
    if facts.closed_at is not None:
        closed = f"{_time(facts.closed_at)} by {facts.closed_by or 'not recorded'}"
        open_for = duration_text((facts.closed_at - facts.opened_at).total_seconds())
        after_detection = duration_text((facts.closed_at - facts.detected_at).total_seconds())
    else:
        closed, open_for, after_detection = "not closed when this report was made", "still open", "-"
        later.append("Closing of the exposure: when and by whom")
    return Section(
        "(d) Measures taken (Art. 33(3)(d))",
        (
            (
                "Detected by permwatch",
                f"{_time(facts.detected_at)} ({duration_text(detection.total_seconds())} after the change)",
            ),
            ("Change made by", _list(facts.changed_by) or "not recorded"),
            ("Permissions restored (exposure closed)", closed),
            ("Exposure lasted", open_for),
            ("Closed after detection", after_detection),
            ("Further measures proposed", "to be completed by the controller"),
        ),
    )


# ---------------------------------------------------------------- renders


def render_markdown(report: Report) -> str:
    lines = [f"# {_md(report.title)}", "", f"_{_md(report.preamble)}_", ""]
    for section in report.sections:
        lines += [f"## {section.title}", ""]
        lines += [
            f"- **{_md(name)}** {_md(value)}" if name.endswith(".") else f"- **{_md(name)}:** {_md(value)}"
            for name, value in section.items
        ]
        if section.table is not None:
            lines += ["", "| " + " | ".join(section.table.headers) + " |", "|" + "---|" * len(section.table.headers)]
            lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in section.table.rows]
        if section.note:
            lines += ["", f"_{_md(section.note)}_"]
        lines.append("")
    return "\n".join(lines)


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem;color:#111}"
    "h1{font-size:1.4rem}h2{font-size:1.1rem;border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:1.6rem}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{font-weight:600}dd{margin:0}"
    "table{border-collapse:collapse;margin-top:.6rem}td,th{border:1px solid #ccc;padding:.2rem .5rem;"
    "text-align:left;vertical-align:top}.note{color:#555;font-style:italic}"
)


def render_html(report: Report) -> str:
    """One self-contained page: inline style, no scripts, no external resources; everything escaped."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(report.title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>{e(report.title)}</h1>",
        f'<p class="note">{e(report.preamble)}</p>',
    ]
    for section in report.sections:
        out.append(f"<h2>{e(section.title)}</h2>")
        if section.items:
            out.append("<dl>")
            out += [f"<dt>{e(name)}</dt><dd>{e(value)}</dd>" for name, value in section.items]
            out.append("</dl>")
        if section.table is not None:
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in section.table.headers) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in section.table.rows]
            out.append("</table>")
        if section.note:
            out.append(f'<p class="note">{e(section.note)}</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- helpers


def _md(text: str) -> str:
    """Plain text safe in Markdown: characters that would start emphasis, code or a link are escaped."""
    for ch in ("\\", "*", "_", "`", "[", "]", "<", ">"):
        text = text.replace(ch, "\\" + ch)
    return text


def _cell(text: str) -> str:
    return _md(text).replace("|", "\\|") or " "


def _missing(later: list[str], what: str, key: str) -> str:
    later.append(f"{what} (not configured: [{key}])")
    return "not configured"


def _contact(contact: ContactConfig | None) -> str | None:
    if contact is None:
        return None
    parts = [contact.name, contact.address, contact.email, contact.phone]
    return ", ".join(p for p in parts if p)


def _list(values: Sequence[str]) -> str:
    return ", ".join(values)


def _approx(value: int | None) -> str | None:
    return None if value is None else f"about {value:,}"


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


_CONFIDENCE = {
    "pidfd": "uid from fanotify, pidfd",
    "proc": "uid from fanotify, best effort",
    "smb_audit": "Samba audit log",
    "audit": "kernel audit log",
}


def _confidence(confidence: str) -> str:
    return {"unresolved": "unresolved"}.get(confidence) or _CONFIDENCE.get(confidence, confidence)


def _time(when: datetime | None) -> str:
    return "-" if when is None else when.strftime("%Y-%m-%d %H:%M:%S UTC")
