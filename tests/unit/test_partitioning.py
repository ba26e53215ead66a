"""Sharing the work between processors: how fs events are keyed, and how a rebuilt engine squares
itself with the exposures already published (processor/partitioned.py)."""

from __future__ import annotations

from permwatch.events import DirectoryGroup, ExposureStatus, FsKind, FsPermissionEvent, LabelAssigned, ObjectType
from permwatch.keys import FsKeys
from processor.published import PublishedRecord
from tests.unit.test_engine import ALLA, LABEL, MGMT, entry, fs, setup

OPEN_ACL = (entry("user_obj", "rwx"), entry("group_obj", "rx"), entry("group", "rx", ALLA), entry("mask", "rx"))


def test_paths_travel_in_their_unit_and_roots_go_everywhere() -> None:
    router = FsKeys(["/srv/share", "/srv/share/../home/"])
    assert router.unit_of("/srv/share/ledning/a/b.txt") == "/srv/share/ledning"
    assert router.unit_of("/srv/share/ledning") == "/srv/share/ledning"
    assert router.unit_of("/srv/home/anna/x") == "/srv/home/anna"
    for broadcast in ("/srv/share", "/srv", "/"):
        assert router.unit_of(broadcast) is None
        [routed] = router.route(fs(broadcast, mode=0o755))
        assert routed.broadcast and routed.key is None
    label = LabelAssigned(path="/srv/share/ledning", label=LABEL)
    assert [(r.key, r.broadcast) for r in router.route(label)] == [("/srv/share/ledning", False)]


def test_a_move_between_units_tells_the_old_unit_first() -> None:
    router = FsKeys(["/srv/share"])
    moved = FsPermissionEvent.model_validate(
        {
            **fs("/srv/share/alla/x", mode=0o640, obj=ObjectType.FILE).model_dump(),
            "kind": "moved",
            "old_path": "/srv/share/ledning/x",
        }
    )
    gone, arrived = router.route(moved)
    assert gone.key == "/srv/share/ledning" and gone.event.kind is FsKind.DELETED
    assert gone.event.path == "/srv/share/ledning/x"  # type: ignore[attr-defined]
    assert arrived == type(arrived)(moved, "/srv/share/alla")
    within = moved.model_copy(update={"old_path": "/srv/share/alla/y"})
    assert [r.event for r in router.route(within)] == [within]


def test_forgetting_paths_keeps_directory_and_labels_and_says_nothing() -> None:
    engine = setup()
    change = fs("/srv/share/ledning", *OPEN_ACL)
    [opened] = engine.step(change)
    engine.forget_paths()
    assert engine.flush() == [] and not engine.paths.states
    assert "/srv/share/ledning" in engine.tracker.folders
    for path in ("/", "/srv", "/srv/share"):
        engine.step(fs(path, mode=0o755))
    # rebuilt from history: the same exposure, judged against the directory as it is
    [again] = engine.step(change)
    assert again.exposure_id == opened.exposure_id


def test_reconcile_publishes_only_what_the_record_lacks() -> None:
    engine = setup()
    [opened] = engine.step(fs("/srv/share/ledning", *OPEN_ACL))
    record = PublishedRecord.of([opened.to_event()])
    # in step with the record: nothing to say
    engine.adopt(record, owned_only=True)
    assert engine.reconcile(record, "reconcile.test", owned_only=True) == []
    # the record has it open, the rebuilt state says closed (its closing was never published)
    engine.apply(fs("/srv/share/ledning", mode=0o750))
    engine.adopt(record, owned_only=True)
    [closed] = engine.reconcile(record, "reconcile.test", owned_only=True)
    assert (closed.status, closed.exposure_id, closed.sequence) == (ExposureStatus.CLOSED, opened.exposure_id, 1)
    # the rebuilt state has one open the record never saw: a directory change the previous owner
    # took and never published the effect of, so the exposure is that change's
    engine = setup()
    engine.step(fs("/srv/share/ledning", mode=0o750))
    nesting = DirectoryGroup(name="ledningsgrupp", gid=MGMT, member_users=("anna",), member_groups=("alla",))
    [opened] = engine.step(nesting)
    engine.adopt(PublishedRecord(), owned_only=True)
    [announced] = engine.reconcile(PublishedRecord(), "reconcile.test", owned_only=True)
    assert (announced.status, announced.exposure_id, announced.sequence) == (
        ExposureStatus.OPENED,
        opened.exposure_id,
        0,
    )
    assert announced.opened_at == nesting.observed_at and announced.cause_event_ids == (nesting.event_id,)
    # folders whose paths this engine does not hold are not its to judge
    engine.forget_paths()
    engine.adopt(record, owned_only=True)
    assert engine.reconcile(record, "reconcile.test", owned_only=True) == []


def test_live_changes_after_a_rebuild_continue_the_published_exposure() -> None:
    published = setup()
    [opened] = published.step(fs("/srv/share/ledning", *OPEN_ACL))
    # the new owner rebuilt the folder from history into an exposure of another id (say its rebuild
    # met the directory later than the previous owner did); the record wins
    rebuilt = setup()
    [other] = rebuilt.step(fs("/srv/share/ledning", *OPEN_ACL))
    assert other.exposure_id != opened.exposure_id
    assert rebuilt.adopt(PublishedRecord.of([opened.to_event()]), owned_only=True) == 1
    [closed] = rebuilt.step(fs("/srv/share/ledning", mode=0o750))
    assert (closed.status, closed.exposure_id, closed.sequence) == (ExposureStatus.CLOSED, opened.exposure_id, 1)


def test_adopting_takes_the_published_grants_not_just_their_names() -> None:
    # The previous owner published the effect of a change it never committed: the ACL naming the
    # broad group too, on top of the nesting that already let it read. Same people, same group name,
    # another grant. The new owner rebuilt up to the commit (without that change) and takes it live:
    # that is what was published, so nothing more is said.
    folder = "/srv/share/ledning"
    nesting = DirectoryGroup(name="ledningsgrupp", gid=MGMT, member_users=("anna",), member_groups=("alla",))
    previous = setup()
    previous.step(fs(folder, mode=0o750))
    [opened] = previous.step(nesting)
    [widened] = previous.step(fs(folder, *OPEN_ACL))
    assert widened.status is ExposureStatus.CHANGED
    assert (widened.people, widened.groups) == (opened.people, opened.groups) and widened.grants != opened.grants
    rebuilt = setup()
    rebuilt.step(fs(folder, mode=0o750))
    rebuilt.step(nesting)
    assert rebuilt.adopt(PublishedRecord.of([opened.to_event(), widened.to_event()]), owned_only=True) == 1
    assert rebuilt.step(fs(folder, *OPEN_ACL)) == []
    [closed] = rebuilt.step(fs(folder, mode=0o700))
    assert (closed.status, closed.exposure_id, closed.sequence) == (ExposureStatus.CLOSED, opened.exposure_id, 2)
