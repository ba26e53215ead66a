"""Grouping: one cause, one actor or one change window make one burst; time is the events' own, set by a test clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from alerts.grouping import BurstGrouper, GroupingPolicy, group_id_for
from alerts.store import GroupStore, open_state_db
from permwatch.events import ExposureEvent
from tests.unit.alert_samples import Clock, case_burst, changed, closed, opened

POLICY = GroupingPolicy(window_seconds=5.0, actor_window_seconds=60.0, max_span_seconds=600.0)


def ids(grouper: BurstGrouper, events: list[ExposureEvent]) -> list[str]:
    return [grouper.assign(event)[0] for event in events]


def test_one_cause_is_one_group_and_the_id_is_the_first_exposures() -> None:
    burst = case_burst(5000)
    assert set(ids(BurstGrouper(POLICY), burst)) == {group_id_for("exp-case-00000")}


def test_change_window_groups_unrelated_causes_only_when_close_in_time() -> None:
    clock = Clock()
    grouper = BurstGrouper(POLICY)
    a = grouper.assign(opened("a", at=clock(), causes=("c1",), actor=None))[0]
    b = grouper.assign(opened("b", at=clock.advance(4.9), causes=("c2",), actor=None))[0]
    # the window slides: 4.9 s after the last member, not the first
    c = grouper.assign(opened("c", at=clock.advance(4.9), causes=("c3",), actor=None))[0]
    d = grouper.assign(opened("d", at=clock.advance(5.1), causes=("c4",), actor=None))[0]
    assert a == b == c != d


def test_same_actor_groups_within_its_own_longer_window() -> None:
    clock = Clock()
    grouper = BurstGrouper(POLICY)
    first = grouper.assign(opened("a", at=clock(), causes=("c1",), actor="it-update"))[0]
    later = grouper.assign(opened("b", at=clock.advance(50), causes=("c2",), actor="it-update"))[0]
    too_late = grouper.assign(opened("c", at=clock.advance(61), causes=("c3",), actor="it-update"))[0]
    assert first == later != too_late


def test_different_known_actors_are_different_bursts_even_at_the_same_moment() -> None:
    clock = Clock()
    grouper = BurstGrouper(POLICY)
    anna = grouper.assign(opened("a", at=clock(), causes=("c1",), actor="anna"))[0]
    bo = grouper.assign(opened("b", at=clock.advance(1), causes=("c2",), actor="bo"))[0]
    unknown = grouper.assign(opened("c", at=clock.advance(1), causes=("c3",), actor=None))[0]
    assert anna != bo
    assert unknown == bo  # the most recent compatible burst


def test_a_backlog_read_partition_by_partition_groups_as_it_would_live() -> None:
    """Two real bursts (no actor, a cause per folder) an hour apart, read one partition after the other: each
    partition holds a folder of each, so the older burst is joined again after the newer one started."""
    clock = Clock()
    early, late = clock(), clock.advance(3600)
    partition_0 = [
        opened("x1", at=early, causes=("c1",), actor=None),
        opened("y1", at=late, causes=("c2",), actor=None),
    ]
    partition_1 = [
        opened("x2", at=early, causes=("c3",), actor=None),
        opened("y2", at=late, causes=("c4",), actor=None),
    ]
    x1, y1, x2, y2 = ids(BurstGrouper(POLICY), partition_0 + partition_1)
    assert x1 == x2 != y1 == y2

    # the same with an actor: the actor's burst is found behind a burst joined since
    grouper = BurstGrouper(POLICY)
    anna = grouper.assign(opened("a1", at=late, causes=("c1",), actor="anna"))[0]
    grouper.assign(opened("u1", at=early, causes=("c2",), actor=None))
    assert grouper.assign(opened("a2", at=late + timedelta(seconds=30), causes=("c3",), actor="anna"))[0] == anna


def test_a_shared_cause_groups_whatever_the_time() -> None:
    clock = Clock()
    grouper = BurstGrouper(POLICY)
    a = grouper.assign(opened("a", at=clock(), causes=("c1",), actor=None))[0]
    b = grouper.assign(opened("b", at=clock.advance(3000), causes=("c1", "c9"), actor=None))[0]
    assert a == b


def test_max_span_caps_a_burst_that_keeps_growing() -> None:
    clock = Clock()
    grouper = BurstGrouper(POLICY)
    groups = {
        grouper.assign(opened(f"e{i}", at=clock.advance(50), causes=(f"c{i}",), actor="cron"))[0] for i in range(20)
    }
    assert len(groups) == 2  # 1,000 s of changes 50 s apart, at most 600 s per burst


def test_later_events_follow_their_exposure_and_a_closed_burst_takes_no_new_members() -> None:
    clock = Clock()
    grouper = BurstGrouper(POLICY)
    first = opened("a", at=clock(), causes=("c1",))
    group = grouper.assign(first)[0]
    grouper.assign(changed(first, groups=("alla", "it"), people=9))
    group_after_close, member = grouper.assign(closed(first, sequence=2, after=2.0))
    assert group_after_close == group and not member.is_open
    assert member.open_groups == ("alla", "it") and member.open_people == 9
    grouper.forget_closed()
    assert grouper.assign(opened("b", at=clock.advance(3), causes=("c1",)))[0] != group


def test_a_repeated_or_older_event_changes_nothing() -> None:
    grouper = BurstGrouper(POLICY)
    first = opened("a")
    change = changed(first, groups=("it",), people=2)
    grouper.assign(first)
    _, member = grouper.assign(change)
    _, again = grouper.assign(first)
    assert again == member and member.previous_groups == ("alla",)


def test_a_restart_from_the_store_groups_like_one_uninterrupted_run(tmp_path: Path) -> None:
    clock = Clock()
    events = []
    for burst in range(3):
        events += case_burst(50, start=burst * 50, at=clock.advance(30), cause=f"cause-{burst}", actor=f"admin-{burst}")
    events += [closed(e, after=40.0) for e in events[:50]]
    events += case_burst(10, start=1000, at=clock.advance(2), cause="late", actor="admin-2")
    uninterrupted = ids(BurstGrouper(POLICY), events)

    store = GroupStore(open_state_db(tmp_path / "state.db"))
    grouper = BurstGrouper(POLICY)
    half = len(events) // 2
    first_half = [grouper.assign(e) for e in events[:half]]
    store.save(first_half)
    restarted = BurstGrouper(POLICY, groups=store.load_open(), lookup=store.load_group_of)
    assert [g for g, _ in first_half] + ids(restarted, events[half:]) == uninterrupted
    assert len(set(uninterrupted)) == 3  # the late ones joined admin-2's burst


def test_a_closed_burst_is_found_again_for_a_late_event(tmp_path: Path) -> None:
    store = GroupStore(open_state_db(tmp_path / "state.db"))
    grouper = BurstGrouper(POLICY)
    first = opened("a")
    store.save([grouper.assign(first), grouper.assign(closed(first))])
    restarted = BurstGrouper(POLICY, groups=store.load_open(), lookup=store.load_group_of)
    assert restarted.open_groups() == []
    assert restarted.assign(closed(first))[0] == group_id_for("a")
