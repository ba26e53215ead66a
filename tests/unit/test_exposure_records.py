"""What an exposure record says: every outsider reachable, paths always current, the kind of exposure.

Judged by the engine on hand-made events (the same shapes as ``test_engine``); the workshop side
(``exposure_windows``, ``breach_report``) is fed the engine's verdicts and the records they make.
"""

from __future__ import annotations

from permwatch.config import ProcessorConfig
from permwatch.events import (
    AclEntry,
    DirectoryGroup,
    DirectoryUser,
    ExposureEvent,
    ExposureStatus,
    LabelAssigned,
    ObjectType,
    decode,
    encode,
)
from processor.engine import Engine
from processor.exposures import Verdict
from processor.forensics import breach_report, exposure_windows
from processor.published import PublishedRecord
from tests.unit.test_engine import ALLA, LABEL, Clock, entry, fs, users

FOLDER = "/srv/share/ledning"
STAFF = [f"staff{i:02}" for i in range(30)]


def wide_engine(max_users_listed: int) -> Engine:
    """``alla`` holds 30 more people; the folder is root's and labelled, not yet readable by them."""
    engine = Engine(clock=Clock(), max_users_listed=max_users_listed)
    users(engine)
    for i, name in enumerate(STAFF):
        engine.apply(DirectoryUser(name=name, uid=3000 + i, primary_gid=ALLA))
    engine.apply(DirectoryGroup(name="alla", gid=ALLA, member_users=("bo", "cia", "eva", *STAFF)))
    for path in ("/", "/srv", "/srv/share"):
        engine.apply(fs(path, mode=0o755, group=0))
    engine.apply(fs(FOLDER, mode=0o750))
    engine.apply(fs(f"{FOLDER}/protokoll.txt", mode=0o640, obj=ObjectType.FILE))
    engine.apply(LabelAssigned(path=FOLDER, label=LABEL))
    assert engine.flush() == []
    return engine


def alla_acl(perms: str = "rx") -> tuple[AclEntry, ...]:
    return (
        entry("user_obj", "rwx"),
        entry("group_obj", "rx"),
        entry("group", perms, ALLA),
        entry("mask", "rx"),
        entry("other", ""),
    )


def open_to_alla(engine: Engine) -> list[Verdict]:
    return engine.step(fs(FOLDER, *alla_acl()))


# ------------------------------------------------------------ item 6: the full set of outsiders


def test_the_record_lists_up_to_the_bound_and_says_when_it_cuts() -> None:
    engine = wide_engine(max_users_listed=10)
    (opened,) = open_to_alla(engine)
    everyone = sorted(["bo", "cia", "eva", *STAFF])
    assert opened.people == len(everyone) == 33
    assert opened.users == tuple(everyone[:10])
    assert opened.users_truncated is True
    assert opened.all_users == tuple(everyone)  # the verdict has them all, for the workshop
    wire = opened.to_event()
    assert wire.users_truncated is True and len(wire.users) == 10


def test_a_verdict_is_the_contracts_exposure_event_built_without_validation() -> None:
    """The engine builds its verdicts unchecked (permwatch.wire.unchecked): every field of the contract's
    model, in its order, valid, and the same bytes on the wire as the validated event."""
    (opened,) = open_to_alla(wide_engine(max_users_listed=10))
    assert isinstance(opened, ExposureEvent)
    assert list(vars(opened)) == [*ExposureEvent.model_fields, "all_users"]
    wire = opened.to_event()
    assert type(wire) is ExposureEvent
    assert ExposureEvent.model_validate(opened.model_dump()) == wire
    assert encode(opened) == encode(wire) and decode(encode(opened)) == wire
    assert b"all_users" not in encode(opened)


def test_under_the_bound_the_record_names_everyone_and_is_not_cut() -> None:
    engine = wide_engine(max_users_listed=ProcessorConfig().max_users_listed)
    (opened,) = open_to_alla(engine)
    assert ProcessorConfig().max_users_listed == 200
    assert len(opened.users) == opened.people == 33
    assert opened.users_truncated is False


def test_the_workshop_names_every_outsider_and_the_recorded_view_says_it_is_cut() -> None:
    engine = wide_engine(max_users_listed=5)
    verdicts = open_to_alla(engine)
    (replayed,) = exposure_windows(verdicts)
    assert replayed.users == sorted(["bo", "cia", "eva", *STAFF])
    assert replayed.users_complete is True
    assert replayed.to_json()["users"] == replayed.users
    report = breach_report(replayed)
    assert all(name in report for name in STAFF)
    (recorded,) = exposure_windows([v.to_event() for v in verdicts])
    assert recorded.users == ["bo", "cia", "eva", "staff00", "staff01"]
    assert recorded.users_complete is False
    assert "the record cut the list" in breach_report(recorded)


def test_a_restart_takes_over_a_cut_record_without_a_spurious_change() -> None:
    live = wide_engine(max_users_listed=5)
    published = [v.to_event() for v in open_to_alla(live)]
    rebuilt = wide_engine(max_users_listed=5)
    open_to_alla(rebuilt)
    record = PublishedRecord.of(published)
    assert rebuilt.adopt(record) == 1
    assert rebuilt.reconcile(record, "reconcile.test") == []
    # a bound changed across the restart: the record is brought up to what the setting says
    wider = wide_engine(max_users_listed=50)
    open_to_alla(wider)
    wider.adopt(record)
    (changed,) = wider.reconcile(record, "reconcile.test")
    assert changed.status is ExposureStatus.CHANGED and changed.users_truncated is False
    assert changed.exposure_id == published[0].exposure_id


# ------------------------------------------------------------ item 7: paths always current


def test_paths_that_become_readable_later_change_the_open_exposure() -> None:
    """A recursive setfacl reaches the folder first and its files after: the record follows each step."""
    engine = wide_engine(max_users_listed=200)
    (opened,) = open_to_alla(engine)
    assert (opened.paths_affected, opened.sample_paths) == (1, (FOLDER,))
    more = [f"{FOLDER}/a.txt", f"{FOLDER}/b.txt"]
    for path in more:
        engine.apply(fs(path, *alla_acl(), obj=ObjectType.FILE))
    (changed,) = engine.flush()
    assert changed.status is ExposureStatus.CHANGED
    assert changed.people == opened.people and changed.grants == opened.grants  # only the paths moved
    assert (changed.paths_affected, changed.sample_paths) == (3, (FOLDER, *more))
    assert changed.exposure_id == opened.exposure_id and changed.sequence == 1
    assert engine.step(fs(f"{FOLDER}/a.txt", *alla_acl(), obj=ObjectType.FILE)) == []  # nothing new: no event


def test_a_swap_of_exposing_paths_with_the_same_count_changes_the_sample() -> None:
    engine = wide_engine(max_users_listed=200)
    open_to_alla(engine)
    engine.step(fs(f"{FOLDER}/a.txt", *alla_acl(), obj=ObjectType.FILE))
    engine.apply(fs(f"{FOLDER}/a.txt", mode=0o640, obj=ObjectType.FILE))
    engine.apply(fs(f"{FOLDER}/b.txt", *alla_acl(), obj=ObjectType.FILE))
    (changed,) = engine.flush()
    assert changed.paths_affected == 2
    assert changed.sample_paths == (FOLDER, f"{FOLDER}/b.txt")


def test_paths_that_stop_being_readable_narrow_the_record() -> None:
    engine = wide_engine(max_users_listed=200)
    open_to_alla(engine)
    names = [f"{FOLDER}/f{i}.txt" for i in range(8)]
    for path in names:
        engine.apply(fs(path, *alla_acl(), obj=ObjectType.FILE))
    (wide,) = engine.flush()
    assert wide.paths_affected == 9 and wide.sample_paths == (FOLDER, *names[:4])
    engine.apply(fs(names[0], mode=0o640, obj=ObjectType.FILE))
    (narrower,) = engine.flush()
    assert narrower.paths_affected == 8 and narrower.sample_paths == (FOLDER, *names[1:5])


def test_a_restart_corrects_a_record_whose_paths_are_stale() -> None:
    live = wide_engine(max_users_listed=200)
    published = [v.to_event() for v in open_to_alla(live)]  # says 1 path
    rebuilt = wide_engine(max_users_listed=200)
    open_to_alla(rebuilt)
    rebuilt.step(fs(f"{FOLDER}/protokoll.txt", *alla_acl(), obj=ObjectType.FILE))
    record = PublishedRecord.of(published)
    rebuilt.adopt(record)
    (changed,) = rebuilt.reconcile(record, "reconcile.test")
    assert changed.status is ExposureStatus.CHANGED and changed.sequence == 1
    assert (changed.paths_affected, changed.sample_paths) == (2, (FOLDER, f"{FOLDER}/protokoll.txt"))


# ------------------------------------------------------------ item 8: the kind of exposure


def kinds(verdicts: list[Verdict]) -> list[tuple[str, str]]:
    return [(v.status.value, v.kind.value) for v in verdicts]


def test_a_folder_an_outsider_can_list_but_not_enter_is_an_exposure_of_names() -> None:
    engine = wide_engine(max_users_listed=200)
    verdicts = engine.step(fs(FOLDER, *alla_acl("r")))  # r without x: ls works, cat does not
    assert kinds(verdicts) == [("opened", "names")]
    assert (verdicts[0].paths_affected, verdicts[0].sample_paths) == (1, (FOLDER,))  # the file is not reachable


def test_a_folder_an_outsider_can_enter_is_an_exposure_of_contents_though_no_file_is_readable() -> None:
    """``r-x``: ``ls -l`` works (every file's size, owner and times), so it is more than names."""
    engine = wide_engine(max_users_listed=200)
    (opened,) = engine.step(fs(FOLDER, *alla_acl("rx")))  # can enter, but protokoll.txt is 0640 to the label
    assert kinds([opened]) == [("opened", "contents")]
    assert (opened.paths_affected, opened.sample_paths) == (1, (FOLDER,))  # the file itself stays closed


def test_a_subfolder_listable_through_a_folder_one_may_only_traverse_is_names_until_it_can_be_entered() -> None:
    """The labelled folder is ``--x`` (enter, not list) for alla; its subfolder ``r--``: names, beneath it."""
    engine = wide_engine(max_users_listed=200)
    engine.apply(fs(FOLDER, *alla_acl("x")))
    engine.apply(fs(f"{FOLDER}/arkiv", *alla_acl("r")))
    (names,) = engine.flush()
    assert kinds([names]) == [("opened", "names")] and names.sample_paths == (f"{FOLDER}/arkiv",)
    assert kinds(engine.step(fs(f"{FOLDER}/arkiv", *alla_acl("rx")))) == [("changed", "contents")]


def test_names_widen_to_contents_and_narrow_back_each_a_change_and_the_close_says_contents() -> None:
    engine = wide_engine(max_users_listed=200)
    (opened,) = engine.step(fs(FOLDER, *alla_acl("r")))  # can list, not enter
    assert (opened.status, opened.kind.value) == (ExposureStatus.OPENED, "names")
    (widened,) = engine.step(fs(FOLDER, *alla_acl("rx")))  # can enter: ls -l
    assert kinds([widened]) == [("changed", "contents")]
    assert widened.people == opened.people and widened.paths_affected == 1
    (narrowed,) = engine.step(fs(FOLDER, *alla_acl("r")))
    assert kinds([narrowed]) == [("changed", "names")]
    (closed,) = engine.step(fs(FOLDER, mode=0o750))
    assert kinds([closed]) == [("closed", "contents")]  # it was of contents for a while: its alert must resolve
    assert {v.exposure_id for v in (opened, widened, narrowed, closed)} == {opened.exposure_id}


def test_an_exposure_of_names_only_closes_as_names() -> None:
    engine = wide_engine(max_users_listed=200)
    engine.step(fs(FOLDER, *alla_acl("r")))
    assert kinds(engine.step(fs(FOLDER, mode=0o750))) == [("closed", "names")]


def test_a_directory_and_a_file_with_one_acl_keep_their_kinds_apart() -> None:
    """Signatures carry the kind: a subfolder and a file sharing an ACL (``r--``) and a parent are judged apart.
    The folder is ``--x`` for alla, so they can reach both without listing it."""
    engine = wide_engine(max_users_listed=200)
    engine.apply(fs(FOLDER, *alla_acl("x")))
    engine.apply(fs(f"{FOLDER}/arkiv", *alla_acl("r")))
    engine.apply(fs(f"{FOLDER}/brev.txt", *alla_acl("r"), obj=ObjectType.FILE))
    assert kinds(engine.flush()) == [("opened", "contents")]
    assert kinds(engine.step(fs(f"{FOLDER}/brev.txt", mode=0o640, obj=ObjectType.FILE))) == [("changed", "names")]


def test_a_label_without_alerts_on_names_records_them_and_the_sinks_skip_them() -> None:
    from alerts.base import SinkSettings
    from collectors.labels import LabelPolicy
    from permwatch.config import LabelDefinition, LabelsConfig

    policy = LabelPolicy(LabelsConfig(definitions={"ledning": LabelDefinition(alert_on_names=False)}))
    quiet = policy.labels["ledning"]
    assert quiet.alert_on_names is False and LabelPolicy(LabelsConfig()).labels == {}
    engine = wide_engine(max_users_listed=200)
    engine.step(LabelAssigned(path=FOLDER, label=quiet.model_copy(update={"allowed_groups": ("ledningsgrupp",)})))
    (names,) = engine.step(fs(FOLDER, *alla_acl("r")))
    (contents,) = engine.step(fs(FOLDER, *alla_acl("rx")))
    (closed,) = engine.step(fs(FOLDER, mode=0o750))
    assert kinds([names, contents, closed]) == [("opened", "names"), ("changed", "contents"), ("closed", "contents")]
    sink = SinkSettings(kind="console")
    assert [sink.accepts(v.to_event()) for v in (names, contents, closed)] == [False, True, True]
    loud = names.to_event().model_copy(update={"label": LABEL})
    assert sink.accepts(loud)  # the default: names are alerted


def test_a_restart_corrects_a_record_of_the_wrong_kind() -> None:
    live = wide_engine(max_users_listed=200)
    published = [v.to_event() for v in live.step(fs(FOLDER, *alla_acl("r")))]  # names: the record
    same = wide_engine(max_users_listed=200)
    same.step(fs(FOLDER, *alla_acl("r")))
    record = PublishedRecord.of(published)
    same.adopt(record)
    assert same.reconcile(record, "reconcile.test") == []  # the record says what is true: nothing to add
    rebuilt = wide_engine(max_users_listed=200)  # x was added to the folder before the record took it
    rebuilt.step(fs(FOLDER, *alla_acl("r")))
    rebuilt.step(fs(FOLDER, *alla_acl("rx")))
    rebuilt.adopt(record)
    (changed,) = rebuilt.reconcile(record, "reconcile.test")
    assert kinds([changed]) == [("changed", "contents")] and changed.sequence == 1
    assert changed.exposure_id == published[0].exposure_id


def test_the_breach_report_and_the_windows_say_the_kind() -> None:
    engine = wide_engine(max_users_listed=200)
    verdicts = engine.step(fs(FOLDER, *alla_acl("r")))
    (window,) = exposure_windows(verdicts)
    assert window.kind.value == "names" and window.to_json()["kind"] == "names"
    assert "names only" in breach_report(window)
    verdicts += engine.step(fs(FOLDER, *alla_acl("rx")))
    (window,) = exposure_windows(verdicts)
    assert window.kind.value == "contents"
    assert "Kind: contents" in breach_report(window)


def test_after_a_restart_an_exposure_that_narrowed_to_names_still_closes_as_contents() -> None:
    """The last event on the record says names, but an earlier one said contents: the close must say contents,
    or a label with alert_on_names = false would never see the alert it was sent resolved."""
    live = wide_engine(max_users_listed=200)
    published = [v.to_event() for v in live.step(fs(FOLDER, *alla_acl("r")))]
    published += [v.to_event() for v in live.step(fs(FOLDER, *alla_acl("rx")))]
    published += [v.to_event() for v in live.step(fs(FOLDER, *alla_acl("r")))]
    assert [e.kind.value for e in published] == ["names", "contents", "names"]
    rebuilt = wide_engine(max_users_listed=200)
    rebuilt.step(fs(FOLDER, *alla_acl("r")))
    record = PublishedRecord.of(published)
    assert record.contents == {published[0].exposure_id}
    rebuilt.adopt(record)
    assert rebuilt.reconcile(record, "reconcile.test") == []
    (closed,) = rebuilt.step(fs(FOLDER, mode=0o750))
    assert kinds([closed]) == [("closed", "contents")] and closed.sequence == 3
