"""The processor's judgement on hand-made events: audience rule, mask, traverse, lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from permwatch.events import (
    AclEntry,
    AclTag,
    DirectoryGroup,
    DirectoryUser,
    ExposureStatus,
    FsKind,
    FsPermissionEvent,
    Identity,
    Label,
    LabelAssigned,
    ObjectType,
)
from processor.engine import Engine

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
ROOT, MGMT, ALLA, UNIT = 0, 20001, 20002, 20003


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def users(engine: Engine) -> None:
    people = {"anna": (1001, MGMT), "bo": (1002, ALLA), "cia": (1003, ALLA), "dan": (1004, UNIT), "eva": (1005, ALLA)}
    for name, (uid, gid) in people.items():
        engine.apply(DirectoryUser(name=name, uid=uid, primary_gid=gid))
    engine.apply(DirectoryGroup(name="ledningsgrupp", gid=MGMT, member_users=("anna",)))
    engine.apply(DirectoryGroup(name="alla", gid=ALLA, member_users=("bo", "cia", "eva"), member_groups=("enhet",)))
    engine.apply(DirectoryGroup(name="enhet", gid=UNIT, member_users=("dan",)))
    engine.flush()


def entry(tag: str, perms: str, qualifier: int | None = None) -> AclEntry:
    bits = sum(b for ch, b in (("r", 4), ("w", 2), ("x", 1)) if ch in perms)
    return AclEntry(tag=AclTag(tag), qualifier=qualifier, perms=bits)


def fs(
    path: str,
    *acl: AclEntry,
    mode: int | None = None,
    at: datetime = T0,
    kind: FsKind = FsKind.CHANGED,
    obj: ObjectType = ObjectType.DIRECTORY,
    group: int = MGMT,
) -> FsPermissionEvent:
    if mode is not None and not acl:
        acl = (
            entry("user_obj", "rwx"[:0] or _p(mode >> 6)),
            entry("group_obj", _p(mode >> 3)),
            entry("other", _p(mode)),
        )
    return FsPermissionEvent(
        kind=kind,
        path=path,
        object_type=obj,
        owner=Identity(id=ROOT, name="root"),
        group=Identity(id=group),
        mode=mode if mode is not None else 0o750,
        acl=acl,
        observed_at=at,
    )


def _p(bits: int) -> str:
    return "".join(ch for ch, b in (("r", 4), ("w", 2), ("x", 1)) if bits & b)


LABEL = Label(name="ledning", allowed_groups=("ledningsgrupp",), allowed_users=("root",))


def setup() -> Engine:
    engine = Engine(clock=Clock())
    users(engine)
    engine.step(fs("/", mode=0o755))
    engine.step(fs("/srv", mode=0o755, group=ROOT))
    engine.step(fs("/srv/share", mode=0o755, group=ROOT))
    engine.step(fs("/srv/share/ledning", mode=0o750))
    engine.step(fs("/srv/share/ledning/protokoll.txt", mode=0o640, obj=ObjectType.FILE))
    assert engine.step(LabelAssigned(path="/srv/share/ledning", label=LABEL)) == []
    return engine


def test_named_group_opens_then_closes_with_duration() -> None:
    engine = setup()
    opened = engine.step(
        fs(
            "/srv/share/ledning",
            entry("user_obj", "rwx"),
            entry("group_obj", "rx"),
            entry("group", "rx", ALLA),
            entry("mask", "rx"),
            entry("other", ""),
            at=T0,
        )
    )
    assert [e.status for e in opened] == [ExposureStatus.OPENED]
    exp = opened[0]
    assert exp.groups == ("alla", "enhet")
    assert exp.people == 4  # bo, cia, eva directly, dan through enhet nested in alla
    assert {g.group: g.chain for g in exp.grants} == {"alla": ("alla",), "enhet": ("enhet", "alla")}
    closed = engine.step(fs("/srv/share/ledning", mode=0o750, at=T0 + timedelta(minutes=5)))
    assert [e.status for e in closed] == [ExposureStatus.CLOSED]
    assert closed[0].exposure_id == exp.exposure_id
    assert closed[0].duration_seconds == 300


def test_mask_limits_named_group() -> None:
    engine = setup()
    out = engine.step(
        fs(
            "/srv/share/ledning",
            entry("user_obj", "rwx"),
            entry("group_obj", "rx"),
            entry("group", "rx", ALLA),
            entry("mask", "x"),
            entry("other", ""),
        )
    )
    assert out == []


def test_other_needs_traverse_of_every_ancestor() -> None:
    engine = setup()
    engine.step(fs("/srv/share", mode=0o750, group=ROOT))  # others cannot traverse
    assert engine.step(fs("/srv/share/ledning", mode=0o755)) == []
    opened = engine.step(fs("/srv/share", mode=0o755, group=ROOT))
    assert [e.status for e in opened] == [ExposureStatus.OPENED]
    assert opened[0].people == 4  # everyone but anna (allowed) and root (allowed)


def test_nesting_broad_group_into_allowed_group_is_exposure_but_direct_member_is_not() -> None:
    engine = setup()
    engine.apply(DirectoryGroup(name="ledningsgrupp", gid=MGMT, member_users=("anna", "bo")))
    assert engine.flush() == []  # a person hired into the group directly: allowed
    engine.apply(
        DirectoryGroup(
            name="ledningsgrupp", gid=MGMT, member_users=("anna", "bo"), member_groups=("alla",), actor="cn=it-admin"
        )
    )
    out = engine.flush()
    assert [e.status for e in out] == [ExposureStatus.OPENED]
    assert out[0].actor == "cn=it-admin"
    assert "alla" in out[0].groups
    assert out[0].people == 3  # cia, eva, dan: bo is a direct member now
    engine.step(
        DirectoryGroup(name="alla", gid=ALLA, member_users=("bo", "cia", "eva", "ulf"), member_groups=("enhet",))
    )
    engine.apply(DirectoryUser(name="ulf", uid=1006, primary_gid=ALLA))
    changed = engine.flush()
    assert [e.status for e in changed] == [ExposureStatus.CHANGED]
    assert changed[0].people == 4


def test_primary_group_allowed() -> None:
    engine = setup()
    # anna's primary group is ledningsgrupp; remove her from the member list: still allowed
    engine.apply(DirectoryGroup(name="ledningsgrupp", gid=MGMT, member_users=()))
    assert engine.flush() == []


def test_deep_file_granted_to_broad_group() -> None:
    engine = setup()
    out = engine.step(
        fs(
            "/srv/share/ledning/protokoll.txt",
            entry("user_obj", "rw"),
            entry("group_obj", "r"),
            entry("group", "r", ALLA),
            entry("mask", "r"),
            entry("other", ""),
            obj=ObjectType.FILE,
        )
    )
    assert out == []  # the folder itself is 0750: others cannot traverse into it
    engine.step(
        fs(
            "/srv/share/ledning",
            entry("user_obj", "rwx"),
            entry("group_obj", "rx"),
            entry("group", "x", ALLA),
            entry("mask", "rx"),
            entry("other", ""),
        )
    )
    # traverse on the folder now lets alla reach the file
    exp = engine.tracker.folders["/srv/share/ledning"].open
    assert exp is not None


def test_same_events_same_ids() -> None:
    def run() -> list[str]:
        engine = setup()
        ids = []
        for e in (fs("/srv/share/ledning", mode=0o755, at=T0), fs("/srv/share/ledning", mode=0o750, at=T0)):
            ids += [x.event_id for x in engine.step(e.model_copy(update={"event_id": "fixed"}))]
        return ids

    assert run() == run()


def test_group_change_judges_only_folders_that_depend_on_it() -> None:
    engine = setup()
    engine.apply(DirectoryGroup(name="ekonomi", gid=20010, member_users=("anna",)))
    engine.apply(DirectoryGroup(name="hr", gid=20011, member_users=("anna",)))
    engine.flush()
    for name, gid in (("ekonomi", 20010), ("hr", 20011)):
        engine.step(fs(f"/srv/share/{name}", mode=0o750, group=gid))
        label = Label(name=name, allowed_groups=(name,), allowed_users=("root",))
        engine.step(LabelAssigned(path=f"/srv/share/{name}", label=label))
    before = engine.folders_judged
    engine.apply(DirectoryGroup(name="ekonomi", gid=20010, member_users=("anna", "bo")))
    assert engine.flush() == []  # bo is a direct member now: allowed
    assert engine.folders_judged - before == 1  # only the ekonomi folder depends on that group
    # nesting alla into ekonomi: alla's gid is on no ACL, but ekonomi contains it now
    before = engine.folders_judged
    engine.apply(DirectoryGroup(name="ekonomi", gid=20010, member_users=("anna",), member_groups=("alla",)))
    out = engine.flush()
    assert [(e.folder, e.status) for e in out] == [("/srv/share/ekonomi", ExposureStatus.OPENED)]
    assert engine.folders_judged - before == 1
    # a change inside alla (nested in ekonomi) reaches the ekonomi folder through the nesting
    engine.apply(DirectoryUser(name="ulf", uid=1006, primary_gid=20099))
    assert engine.flush() == []
    engine.apply(DirectoryGroup(name="enhet", gid=UNIT, member_users=("dan", "ulf")))
    changed = engine.flush()
    assert [(e.folder, e.status, e.people) for e in changed] == [("/srv/share/ekonomi", ExposureStatus.CHANGED, 5)]


def test_nesting_cycles_terminate() -> None:
    engine = setup()
    engine.apply(DirectoryGroup(name="alla", gid=ALLA, member_users=("bo",), member_groups=("enhet",)))
    engine.apply(DirectoryGroup(name="enhet", gid=UNIT, member_users=("dan",), member_groups=("alla",)))
    engine.apply(DirectoryGroup(name="ledningsgrupp", gid=MGMT, member_users=("anna",), member_groups=("alla",)))
    out = engine.flush()
    assert [e.status for e in out] == [ExposureStatus.OPENED]
    assert out[0].people == 4  # bo, dan, and cia/eva by primary group alla
    assert engine.directory.containing_groups("enhet") == {"enhet", "alla", "ledningsgrupp"}


def test_a_local_owner_the_label_allows_is_allowed_whatever_came_first() -> None:
    """The label (allowing root by name) before any path owned by a root the directory lacks."""
    engine = Engine(clock=Clock())
    engine.apply(DirectoryUser(name="anna", uid=1001, primary_gid=MGMT))
    engine.apply(DirectoryGroup(name="ledningsgrupp", gid=MGMT, member_users=("anna",)))
    engine.flush()
    assert engine.step(LabelAssigned(path="/srv/share/ledning", label=LABEL)) == []
    for path in ("/", "/srv", "/srv/share"):
        assert engine.step(fs(path, mode=0o755, group=ROOT)) == []
    assert engine.step(fs("/srv/share/ledning", mode=0o750)) == []  # owned by root, who may read it


def test_a_wide_directory_change_judges_every_folder_in_path_order_with_the_new_audience() -> None:
    engine = setup()
    cases = [f"/srv/share/case{i:02d}" for i in range(12)]
    for i, path in enumerate(cases):
        engine.step(fs(path, mode=0o750, group=ALLA if i % 2 == 0 else MGMT))
        # equal labels made apart, as every policy reload or marker file makes them
        engine.step(
            LabelAssigned(
                path=path, label=Label(name="ledning", allowed_groups=("ledningsgrupp",), allowed_users=("root",))
            )
        )
    assert len({id(engine.tracker.folders[path].label) for path in cases}) == 1  # one object per distinct label
    assert [p for p in cases if engine.tracker.folders[p].open is not None] == cases[::2]
    # enhet leaves alla: dan no longer reads the alla folders
    changed = engine.step(DirectoryGroup(name="alla", gid=ALLA, member_users=("bo", "cia", "eva")))
    assert [v.folder for v in changed] == cases[::2]
    assert {(v.status, v.users) for v in changed} == {(ExposureStatus.CHANGED, ("bo", "cia", "eva"))}
    # bo joins the allowed group directly: the label's audience grows, every alla folder is judged again
    changed = engine.step(DirectoryGroup(name="ledningsgrupp", gid=MGMT, member_users=("anna", "bo")))
    assert [v.folder for v in changed] == cases[::2]
    assert {(v.status, v.users, v.people) for v in changed} == {(ExposureStatus.CHANGED, ("cia", "eva"), 2)}


def test_a_primary_gid_no_group_entry_has_is_read_by_its_users_like_the_kernel_does() -> None:
    engine = setup()
    lonely = 20099  # ulf's own group: named by his primary gid and the ACL, never created in the directory
    engine.apply(DirectoryUser(name="ulf", uid=1006, primary_gid=lonely))
    engine.apply(DirectoryUser(name="vera", uid=1007, primary_gid=lonely, disabled=True))
    assert engine.flush() == []
    assert engine.directory.group_for_gid(lonely) is None
    opened = engine.step(
        fs(
            "/srv/share/ledning",
            entry("user_obj", "rwx"),
            entry("group_obj", "rx"),
            entry("group", "rx", lonely),
            entry("mask", "rx"),
            entry("other", ""),
        )
    )
    assert [(e.status, e.people) for e in opened] == [(ExposureStatus.OPENED, 1)]  # ulf; vera is disabled
    # and once ulf's primary gid moves elsewhere, the entry names nobody
    engine.apply(DirectoryUser(name="ulf", uid=1006, primary_gid=ALLA))
    closed = engine.flush()
    assert [e.status for e in closed] == [ExposureStatus.CLOSED]
