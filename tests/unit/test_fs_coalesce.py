"""When a burst of changes is held and read together, and which reads cover its backlog (collectors.fs.coalesce).

Times are passed in: nothing here waits on a clock.
"""

from __future__ import annotations

from collectors.fs.coalesce import BurstMode, ChangedPaths, Read, plan_reads
from collectors.fs.rescans import RescanSchedule


def burst(**overrides: float) -> BurstMode:
    settings = {"threshold": 100, "quiet_seconds": 0.05, "max_defer_seconds": 10.0, "max_pending": 1000} | overrides
    return BurstMode(
        threshold=int(settings["threshold"]),
        quiet_seconds=settings["quiet_seconds"],
        max_defer_seconds=settings["max_defer_seconds"],
        max_pending=int(settings["max_pending"]),
    )


def test_a_burst_starts_once_the_backlog_reaches_the_threshold() -> None:
    mode = burst()
    assert not mode.update(99, now=1.0) and not mode.active
    assert not mode.read_due(99, now=5.0), "outside a burst, paths are read as they come"
    assert mode.update(100, now=2.0) and mode.active
    assert not mode.update(500, now=3.0), "said once"


def test_the_backlog_waits_while_changes_keep_coming_and_is_read_once_quiet() -> None:
    mode = burst()
    mode.changed(now=1.0)
    mode.update(100, now=1.0)
    for tick in range(1, 50):  # a change every 40 ms: never quiet for 50 ms
        now = 1.0 + tick * 0.04
        mode.changed(now)
        assert not mode.read_due(100 + tick, now=now + 0.01)
    last = 1.0 + 49 * 0.04
    assert not mode.read_due(149, now=last + 0.049)
    assert mode.read_due(149, now=last + 0.051)


def test_a_long_burst_is_read_in_rounds() -> None:
    mode = burst(max_defer_seconds=2.0)
    mode.update(100, now=10.0)
    mode.changed(now=11.99)
    assert not mode.read_due(300, now=11.995)
    mode.changed(now=12.0)
    assert mode.read_due(300, now=12.0), "held at most max_defer_seconds, quiet or not"
    assert mode.read_done(150, now=13.0), "many changes came during the read: the burst goes on"
    mode.changed(now=14.9)
    assert not mode.read_due(400, now=14.95), "the next round counts from the end of the last read"
    mode.changed(now=15.0)
    assert mode.read_due(400, now=15.0)


def test_a_backlog_too_big_to_hold_is_read_at_once() -> None:
    mode = burst()
    mode.update(100, now=0.0)
    mode.changed(now=0.5)
    assert not mode.read_due(999, now=0.5)
    assert mode.read_due(1000, now=0.5)


def test_the_burst_ends_when_few_changes_came_during_the_read() -> None:
    mode = burst()
    mode.update(100, now=0.0)
    assert not mode.read_done(99, now=1.0)
    assert not mode.active and not mode.read_due(99, now=100.0)


def test_the_loop_waits_no_longer_than_until_the_backlog_is_due() -> None:
    mode = burst(max_defer_seconds=2.0)
    assert mode.wait_seconds(0.0, 0.25) == 0.25, "not in a burst"
    mode.update(100, now=0.0)
    mode.changed(now=1.0)
    assert abs(mode.wait_seconds(1.01, 0.25) - 0.04) < 1e-9, "until quiet"
    mode.changed(now=1.99)
    assert abs(mode.wait_seconds(1.995, 0.25) - 0.005) < 1e-9, "until the longest hold ends"
    assert mode.wait_seconds(3.0, 0.25) == 0.0


def test_directories_with_many_changed_entries_are_listed_the_rest_read_one_by_one_shallowest_first() -> None:
    backlog = [f"/r/cases/case-1/sub-{i}" for i in range(8)]
    backlog += [f"/r/cases/case-{i}" for i in range(9)]
    backlog += ["/r/other/a", "/r/other/b", "/r", "/"]
    reads = plan_reads(backlog, lambda directory: directory.startswith("/r"), listing_min=8)
    assert reads == [
        Read("path", "/"),
        Read("path", "/r"),  # its parent is outside the root: never listed
        Read("listing", "/r/cases"),
        Read("path", "/r/other/a"),
        Read("path", "/r/other/b"),
        Read("listing", "/r/cases/case-1"),
    ]


def test_a_directory_that_may_not_be_listed_has_its_changed_entries_read_one_by_one() -> None:
    backlog = [f"/srv/root-{i}" for i in range(20)]  # roots side by side: /srv holds more than is watched
    reads = plan_reads(backlog, lambda directory: directory != "/srv", listing_min=8)
    assert reads == [Read("path", path) for path in sorted(backlog)]


def changed_paths(threshold: int = 3) -> ChangedPaths:
    return ChangedPaths(coalesce_seconds=0.01, burst=burst(threshold=threshold))


def test_outside_a_burst_each_path_is_read_once_its_window_ends() -> None:
    waiting = changed_paths()
    waiting.note("/r/a", now=1.0)
    waiting.note("/r/b", now=1.005)
    waiting.note("/r/a", now=1.006)  # the read after the first change sees this one too
    waiting.update(queued=0, now=1.006)
    assert list(waiting.take_due(now=1.009)) == []
    assert [path for path, _ in waiting.take_due(now=1.011)] == ["/r/a"]
    assert [path for path, _ in waiting.take_due(now=1.02)] == ["/r/b"]
    assert waiting.take_backlog(now=5.0, queued=0) is None and len(waiting) == 0


def test_in_a_burst_nothing_is_read_on_its_own_and_the_backlog_is_taken_whole() -> None:
    waiting = changed_paths()
    for i, path in enumerate(["/r/a", "/r/b", "/r/c/d"]):
        waiting.note(path, now=1.0 + i * 0.01)
    waiting.update(queued=0, now=1.02)
    assert waiting.burst.active
    assert list(waiting.take_due(now=2.0)) == [], "held for the burst"
    assert waiting.take_backlog(now=1.06, queued=0) is None, "not quiet yet"
    backlog = waiting.take_backlog(now=1.08, queued=0)
    assert backlog is not None and sorted(backlog) == ["/r/a", "/r/b", "/r/c/d"]
    assert len(waiting) == 0
    waiting.read_done(backlog, [], queued=2, now=1.5)
    assert not waiting.burst.active, "two changes came during the read: read as they come again"


def test_a_scan_takes_what_waits_below_its_root_and_on_its_ancestors() -> None:
    waiting = changed_paths(threshold=100)
    for path in ["/srv", "/srv/share", "/srv/share/a/b", "/srv/other", "/srv/shared"]:
        waiting.note(path, now=1.0)
    waiting.discard("/srv/other")
    waiting.discard_covered_by("/srv/share", ancestors=["/", "/srv"])
    assert [path for path, _ in waiting.take_due(now=2.0)] == ["/srv/shared"]


def test_a_read_stopped_because_the_burst_went_on_leaves_what_it_did_not_read_waiting() -> None:
    waiting = changed_paths()
    backlog_paths = ["/r/a", "/r/d/1", "/r/d/2", "/r/e/x"]
    for path in backlog_paths:
        waiting.note(path, now=1.0)
    waiting.update(queued=0, now=1.0)
    backlog = waiting.take_backlog(now=1.1, queued=0)
    assert backlog is not None
    assert not waiting.burst.must_finish(len(backlog), now=1.1), "a read begun on a quiet moment may stop"
    unread = [Read("listing", "/r/d"), Read("path", "/r/e/x")]  # "/r/a" was read before the burst went on
    waiting.read_done(backlog, unread, queued=500, now=1.2)
    assert waiting.burst.active, "still the same burst"
    waiting.burst.changed(now=1.3)
    assert waiting.take_backlog(now=1.31, queued=0) is None, "the rest waits for the next quiet"
    rest = waiting.take_backlog(now=1.4, queued=0)
    assert rest is not None and sorted(rest) == ["/r/d/1", "/r/d/2", "/r/e/x"]
    assert rest["/r/d/1"] == backlog["/r/d/1"], "observed when first noticed"


def test_a_read_of_a_backlog_held_the_longest_is_read_to_its_end() -> None:
    mode = burst(max_defer_seconds=2.0)
    mode.update(100, now=10.0)
    assert not mode.must_finish(100, now=11.9)
    assert mode.must_finish(100, now=12.0)
    assert mode.must_finish(1000, now=10.5), "too big to hold"


def test_an_overflow_makes_a_burst_and_its_rescan_waits_until_it_is_quiet() -> None:
    mode = burst()
    mode.overflowed(now=1.0)
    assert mode.active and mode.holding(0, now=1.01)
    mode.overflowed(now=1.04)  # overflowing again: still going on
    assert mode.holding(0, now=1.08)
    assert not mode.holding(0, now=1.09)

    schedule = RescanSchedule(["/r"], clock=lambda: 0.0, degraded_rescan_seconds=300.0)
    schedule.request("/r", 1.0)
    assert schedule.take("/r", hold_overflow=True) is None, "held, not taken"
    assert schedule.take("/r") == "overflow"
    schedule.request_all("spool_overflow", 2.0)
    assert schedule.take("/r", hold_overflow=True) == "spool_overflow", "events the bus lost are not held"
