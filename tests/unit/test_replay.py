"""Replay and forensics on a recorded history: same windows as live, who could read when, reports, timelines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from permwatch.events import (
    AclEntry,
    AclTag,
    DirectoryGroup,
    DirectoryUser,
    FsKind,
    FsPermissionEvent,
    Identity,
    Label,
    LabelAssigned,
    encode,
)
from permwatch.transport.embedded import EmbeddedBus
from processor.engine import Engine
from processor.forensics import breach_report, exposure_windows, who_can_read
from processor.replay import replay
from processor.timeline import build_timeline, render_html, timeline_items

T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
FOLDER = "/srv/share/ledning"
LABEL = Label(name="ledning", allowed_groups=("ledningsgrupp",), allowed_users=("root",))


def acl(*groups: tuple[int, int]) -> tuple[AclEntry, ...]:
    named = tuple(AclEntry(tag=AclTag.GROUP, qualifier=gid, perms=perms) for gid, perms in groups)
    return (
        AclEntry(tag=AclTag.USER_OBJ, perms=7),
        AclEntry(tag=AclTag.GROUP_OBJ, perms=5),
        *named,
        AclEntry(tag=AclTag.MASK, perms=5),
        AclEntry(tag=AclTag.OTHER, perms=0),
    )


def fs(path: str, at: datetime, *entries: AclEntry, mode: int = 0o755) -> FsPermissionEvent:
    return FsPermissionEvent(
        kind=FsKind.CHANGED,
        path=path,
        owner=Identity(id=0, name="root"),
        group=Identity(id=20001),
        mode=mode,
        acl=entries,
        observed_at=at,
    )


def drill() -> list[tuple[datetime, object]]:
    """Baseline, an opening, a widening through a group change, a close: (time, event) pairs."""
    events: list[tuple[datetime, object]] = []
    for i, name in enumerate(["anna", "bo", "cia", "dan"]):
        events.append((T0, DirectoryUser(name=name, uid=1001 + i, primary_gid=29999, observed_at=T0)))
    events.append((T0, DirectoryGroup(name="ledningsgrupp", gid=20001, member_users=("anna",), observed_at=T0)))
    events.append((T0, DirectoryGroup(name="alla", gid=20002, member_users=("bo", "cia"), observed_at=T0)))
    for path in ("/", "/srv", "/srv/share"):
        events.append((T0, fs(path, T0, mode=0o755)))
    events.append((T0, fs(FOLDER, T0, *acl(), mode=0o750)))
    events.append((T0, LabelAssigned(path=FOLDER, label=LABEL, observed_at=T0)))
    t1 = T0 + timedelta(hours=1)
    events.append((t1, fs(FOLDER, t1, *acl((20002, 5)), mode=0o750)))  # the IT update
    t2 = T0 + timedelta(hours=2)
    events.append(
        (t2, DirectoryGroup(name="alla", gid=20002, member_users=("bo", "cia", "dan"), actor="cn=it", observed_at=t2))
    )
    t3 = T0 + timedelta(days=3)
    events.append((t3, fs(FOLDER, t3, *acl(), mode=0o750)))  # the revert
    return events


def record(tmp_path: Path) -> EmbeddedBus:
    bus = EmbeddedBus(tmp_path / "log.db")
    for _, event in drill():
        bus.publish(event.topic, event.key, encode(event))  # type: ignore[attr-defined]
    bus.flush()
    return bus


def live_windows() -> list[tuple[object, ...]]:
    engine = Engine()
    verdicts = []
    for _, event in drill():
        verdicts += engine.step(event)  # type: ignore[arg-type]
    return [w.key() for w in exposure_windows(verdicts)]


def test_replay_gives_the_live_windows(tmp_path: Path) -> None:
    bus = record(tmp_path)
    # the log's timestamps are publish times (all within a few ms here), so judge record by record
    result = replay(bus.history(["fs", "directory", "labels"]), gap_ms=-1)
    windows = exposure_windows(result.verdicts)
    assert [w.key() for w in windows] == live_windows()
    [window] = windows
    assert window.opened_at == T0 + timedelta(hours=1)
    assert window.closed_at == T0 + timedelta(days=3)
    assert window.max_people == 3 and window.groups == ["alla"] and window.actors == ["cn=it"]
    assert [c["status"] for c in window.changes] == ["opened", "changed", "closed"]
    assert result.events == len(drill()) and result.events_per_second > 0


def test_who_can_read_inside_and_before_the_window(tmp_path: Path) -> None:
    bus = record(tmp_path)
    history = list(bus.history(["fs", "directory", "labels"]))
    inside = replay(history[: len(history) - 2], gap_ms=-1)  # up to the IT update
    label, readers = who_can_read(inside.engine, FOLDER)
    assert label is not None and label.name == "ledning"
    outsiders = {(r.user, r.entry, r.chain) for r in readers if not r.allowed}
    assert outsiders == {("bo", "group:alla", ("alla",)), ("cia", "group:alla", ("alla",))}
    before = replay(history[: len(history) - 3], gap_ms=-1)
    assert [r for r in who_can_read(before.engine, FOLDER)[1] if not r.allowed] == []


def test_what_if_policy_relabels(tmp_path: Path) -> None:
    bus = record(tmp_path)
    stricter = Label(name="strict", allowed_groups=(), allowed_users=("root",))
    result = replay(
        bus.history(["fs", "directory", "labels"]), gap_ms=-1, label_for=lambda p: stricter if p == FOLDER else None
    )
    [window] = exposure_windows(result.verdicts)
    assert window.label == "strict"
    assert window.opened_at == T0  # anna (ledningsgrupp) is outside a label that allows nobody


def test_report_and_timeline_never_carry_contents(tmp_path: Path) -> None:
    bus = record(tmp_path)
    result = replay(bus.history(["fs", "directory", "labels"]), gap_ms=-1, keep=timeline_items(FOLDER))
    [window] = exposure_windows(result.verdicts)
    report = breach_report(window)
    assert "# Personal data breach report (draft): /srv/share/ledning" in report
    assert "- People outside the label who could read: 3" in report
    assert "- cn=it" in report and "- Duration: 2 d 23 h 0 min 0 s" in report
    timeline = build_timeline(FOLDER, result.observed, [window])
    assert [e.kind for e in timeline.entries].count("change") == 6  # ancestors, baseline, update, revert
    page = render_html(timeline)
    assert (
        'class="exposure-bar"' in page
        and "<script" not in page
        and "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )
