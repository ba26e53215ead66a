"""Samba's share-level door in the processor (issue 16, item 6): ``valid users``, ``invalid users`` and the share
ACL narrow the readers of the share's path and of everything beneath it, a share change judges the folders below
again, a group named in ``valid users`` reaches them when its members change, and who-can-read says so."""

from __future__ import annotations

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
    NtAce,
    NtAcl,
    ObjectType,
    SambaShare,
)
from processor.engine import Engine
from processor.forensics import who_can_read

DOMAIN = "S-1-5-21-1111-2222-3333"
SHARE = "/srv/share"
FOLDER = "/srv/share/ledning"
FILE = "/srv/share/ledning/protokoll.txt"
READ = 0x001200A9
FULL = 0x001F01FF
EVERYONE_FULL = (NtAce(type="allow", mask=FULL, trustee="S-1-1-0"),)
OPEN_POSIX = (
    AclEntry(tag=AclTag.USER_OBJ, perms=7),
    AclEntry(tag=AclTag.GROUP_OBJ, perms=7),
    AclEntry(tag=AclTag.OTHER, perms=5),
)


def _fs(path: str, object_type: ObjectType = ObjectType.DIRECTORY) -> FsPermissionEvent:
    nt = NtAcl(source="stored", dacl_present=True, dacl=(NtAce(type="allow", mask=READ, trustee="S-1-5-11"),))
    return FsPermissionEvent(
        kind=FsKind.CHANGED,
        path=path,
        object_type=object_type,
        owner=Identity(id=0),
        group=Identity(id=0),
        mode=0o775,
        acl=OPEN_POSIX,
        acl_kind="nt",
        nt_acl=nt,
    )


def _share(**fields: object) -> SambaShare:
    return SambaShare(**{"name": "ledning", "path": SHARE, "acl": EVERYONE_FULL, **fields})  # type: ignore[arg-type]


def _engine() -> Engine:
    """anna (ledning), bo and cecilia; every path readable by Authenticated Users; ``ledning`` labelled for the
    group ledning, so bo and cecilia are outsiders who can read until a share keeps them out."""
    engine = Engine()
    for i, name in enumerate(("anna", "bo", "cecilia")):
        engine.apply(DirectoryUser(name=name, uid=1001 + i, primary_gid=100, sid=f"{DOMAIN}-{1101 + i}"))
    engine.apply(DirectoryGroup(name="ledning", gid=3000, sid=f"{DOMAIN}-3000", member_users=("anna",)))
    for path in ("/", "/srv", SHARE, FOLDER):
        engine.apply(_fs(path))
    engine.apply(_fs(FILE, ObjectType.FILE))
    engine.apply(LabelAssigned(path=FOLDER, label=Label(name="ledning", allowed_groups=("ledning",))))
    [opened] = engine.flush()
    assert opened.status.value == "opened" and opened.all_users == ("bo", "cecilia")
    return engine


def _readers(engine: Engine, path: str) -> set[str]:
    state = engine.paths.get(path)
    assert state is not None
    return set(engine.directory.names(engine.evaluator.readers(path, state)))


def test_valid_users_on_a_share_above_close_the_exposure_and_its_removal_reopens_it() -> None:
    engine = _engine()
    engine.apply(_share(valid_users=("@ledning",)))
    [closed] = engine.flush()
    assert closed.status.value == "closed"
    assert _readers(engine, FILE) == {"anna"} and _readers(engine, SHARE) == {"anna"}
    engine.apply(_share(deleted=True))
    [opened] = engine.flush()
    assert opened.status.value == "opened" and opened.all_users == ("bo", "cecilia")


def test_a_member_added_to_a_group_valid_users_names_reaches_the_folders_below() -> None:
    engine = _engine()
    engine.apply(_share(valid_users=("anna", "+ledning")))
    engine.flush()
    assert engine.folders_depending_on({"ledning"}) == {FOLDER}
    engine.apply(DirectoryGroup(name="ledning", gid=3000, sid=f"{DOMAIN}-3000", member_users=("anna", "bo")))
    engine.flush()
    assert _readers(engine, FILE) == {"anna", "bo"}


def test_invalid_users_and_a_share_acl_deny_each_keep_people_out_and_who_can_read_says_which_share() -> None:
    engine = _engine()
    engine.apply(_share(invalid_users=("cecilia",)))
    engine.flush()
    assert _readers(engine, FILE) == {"anna", "bo"}
    deny_bo = (NtAce(type="deny", mask=FULL, trustee=f"{DOMAIN}-1102"), *EVERYONE_FULL)
    engine.apply(_share(acl=deny_bo))
    [changed] = engine.flush()
    assert _readers(engine, FILE) == {"anna", "cecilia"}
    assert changed.all_users == ("cecilia",)
    _label, grants = who_can_read(engine, FILE)
    assert {(g.user, g.entry) for g in grants} == {
        ("anna", "Authenticated Users (S-1-5-11) ALLOW read [share 'ledning': share ACL]"),
        ("cecilia", "Authenticated Users (S-1-5-11) ALLOW read [share 'ledning': share ACL]"),
    }
    _label, at_share = who_can_read(engine, SHARE)
    assert {g.entry for g in at_share} == {"Authenticated Users (S-1-5-11) ALLOW read [share 'ledning': share ACL]"}


def test_a_share_acl_granting_write_alone_admits_nobody_to_read() -> None:
    engine = _engine()
    write_only = (NtAce(type="allow", mask=0x00000002, trustee="S-1-1-0"),)
    engine.apply(_share(acl=write_only))
    engine.flush()
    assert _readers(engine, FILE) == set()


def test_two_shares_of_one_path_admit_whom_either_admits_and_an_unread_acl_narrows_nobody() -> None:
    engine = _engine()
    engine.apply(_share(valid_users=("anna",)))
    engine.apply(_share(name="ledning2", valid_users=("bo",)))
    engine.flush()
    assert _readers(engine, FILE) == {"anna", "bo"}
    engine.apply(_share(name="ledning2", acl=None, error="sharesec exited with 1", valid_users=("bo",)))
    engine.flush()
    assert _readers(engine, FILE) == {"anna", "bo"}


def test_a_share_known_before_its_path_gates_the_path_when_it_arrives() -> None:
    engine = Engine()
    engine.apply(DirectoryUser(name="anna", uid=1001, primary_gid=100))
    engine.apply(DirectoryUser(name="bo", uid=1002, primary_gid=100))
    engine.apply(_share(path=FOLDER, valid_users=("anna",)))
    for path in ("/", "/srv", SHARE, FOLDER):
        engine.apply(_fs(path))
    engine.apply(_fs(FILE, ObjectType.FILE))
    engine.flush()
    assert _readers(engine, FILE) == {"anna"} and _readers(engine, SHARE) == {"anna", "bo"}


def test_a_moved_share_leaves_its_old_path_open() -> None:
    engine = _engine()
    engine.apply(_share(valid_users=("anna",)))
    engine.apply(_share(deleted=True))
    engine.apply(_share(path=FOLDER, valid_users=("anna",)))
    engine.flush()
    assert _readers(engine, SHARE) == {"anna", "bo", "cecilia"} and _readers(engine, FILE) == {"anna"}


def test_the_share_gates_survive_a_checkpoint() -> None:
    from processor.checkpoint import decode as decode_checkpoint
    from processor.checkpoint import encode as encode_checkpoint

    engine = _engine()
    engine.apply(_share(valid_users=("anna",)))
    engine.flush()
    identity = {"group": "g", "topics": "fs"}
    restored = decode_checkpoint(encode_checkpoint(engine, {}, identity, records=1), identity, source="p").engine
    assert _readers(restored, FILE) == {"anna"}
    restored.apply(_share(deleted=True))
    restored.flush()
    assert _readers(restored, FILE) == {"anna", "bo", "cecilia"}


def test_a_share_change_above_a_folder_is_on_its_timeline() -> None:
    from processor.timeline import relevant_to, timeline_items

    narrowed = _share(valid_users=("anna", "@ledning"), acl=(NtAce(type="deny", mask=FULL, trustee="S-1-5-11"),))
    elsewhere = _share(name="ekonomi", path="/srv/ekonomi")
    assert relevant_to(FOLDER)(narrowed) and not relevant_to(FOLDER)(elsewhere)
    entry = timeline_items(FOLDER)(narrowed)
    assert entry is not None and not isinstance(entry, DirectoryUser | DirectoryGroup)
    assert (entry.kind, entry.summary) == (
        "share",
        "share ledning on /srv/share: valid users anna @ledning; 1 share ACEs (1 deny)",
    )
    gone = timeline_items(FOLDER)(_share(deleted=True))
    assert gone is not None and not isinstance(gone, DirectoryUser | DirectoryGroup)
    assert gone.summary == "share ledning on /srv/share: gone"


def test_a_share_above_a_scanned_root_that_opens_an_exposure_is_a_new_one_not_what_the_first_scan_found() -> None:
    from datetime import timedelta

    from permwatch.events import ScanCompleted

    engine = _engine()
    engine.apply(_share(path="/srv", valid_users=("anna",)))
    engine.flush()
    scan = ScanCompleted(root=SHARE, paths_seen=5, paths_changed=5, seconds=0.1)
    engine.apply(scan)
    later = scan.observed_at + timedelta(seconds=1)
    engine.apply(_share(path="/srv", deleted=True, observed_at=later))
    [opened] = engine.flush()
    assert opened.status.value == "opened" and not opened.preexisting
