"""Readers on a Samba share: the NT check for everybody at once, intersected with POSIX, in the engine.

`nt_readers` (bitsets) must equal `nt_read_decision` run per user on that user's token, for random DACLs over a
random directory with SIDs, nested groups, primary groups and Unix ids. The engine then judges NT events: only
people both checks admit read; grants name the ACE ("Authenticated Users (S-1-5-11) ALLOW read, inherited"); a
stale blob (``source="posix"``) leaves POSIX alone; an unreadable one is judged by POSIX and says so; labels
name principals by SID or by name alike, Domain Users through the primary group.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

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
    NtAceFlag,
    NtAcl,
    ObjectType,
)
from processor.engine import Engine
from processor.nt_access import EVERYBODY, nt_read_decision, nt_readers, user_token
from processor.state import Directory

DOMAIN = "S-1-5-21-1111-2222-3333"
DOMAIN_USERS = f"{DOMAIN}-513"
READ = 0x001200A9
_FLAG_BITS = {
    NtAceFlag.OBJECT_INHERIT: 0x01,
    NtAceFlag.CONTAINER_INHERIT: 0x02,
    NtAceFlag.NO_PROPAGATE_INHERIT: 0x04,
    NtAceFlag.INHERIT_ONLY: 0x08,
    NtAceFlag.INHERITED: 0x10,
}


@dataclass(frozen=True)
class _Entry:
    ace_type: int
    flags: int
    access_mask: int
    trustee: str | None


@dataclass(frozen=True)
class _Descriptor:
    dacl_present: bool
    dacl: tuple[_Entry, ...] | None


def _as_descriptor(nt: NtAcl) -> _Descriptor:
    """The contract's ACL in the shape `nt_read_decision` reads (conditional ACEs as callback kinds)."""
    dacl = None
    if nt.dacl is not None:
        dacl = tuple(
            _Entry(
                {("allow", False): 0x00, ("deny", False): 0x01, ("allow", True): 0x09, ("deny", True): 0x0A}[
                    (ace.type, ace.conditional)
                ],
                sum(_FLAG_BITS[f] for f in ace.flags),
                ace.mask,
                ace.trustee,
            )
            for ace in nt.dacl
        )
    return _Descriptor(nt.dacl_present, dacl)


def _directory(rng: random.Random) -> Directory:
    directory = Directory()
    groups = [f"g{i}" for i in range(4)]
    for i in range(8):
        directory.apply_user(
            DirectoryUser(
                name=f"u{i}",
                uid=1000 + i,
                primary_gid=rng.choice([None, 2000, 2001]),
                sid=f"{DOMAIN}-{1100 + i}",
                primary_group_sid=rng.choice([DOMAIN_USERS, f"{DOMAIN}-1200"]),
                disabled=rng.random() < 0.1,
            )
        )
    for i, name in enumerate(groups):
        directory.apply_group(
            DirectoryGroup(
                name=name,
                gid=2000 + i,
                sid=f"{DOMAIN}-{1200 + i}",
                member_users=tuple(sorted(rng.sample([f"u{j}" for j in range(8)], rng.randint(0, 3)))),
                member_groups=tuple(sorted(rng.sample([g for g in groups if g != name], rng.randint(0, 1)))),
            )
        )
    directory.apply_group(DirectoryGroup(name="Domain Users", sid=DOMAIN_USERS))
    return directory


def _token(directory: Directory, name: str) -> frozenset[str]:
    user = directory.users[name]
    groups = [g for g in directory.groups if directory.effective_members(g) & user.bit]
    gids = [g.gid for n in groups if (g := directory.groups[n]).gid is not None]
    if user.primary_gid is not None:
        gids.append(user.primary_gid)
    sids = [s for n in groups if (s := directory.groups[n].sid) is not None]
    assert user.sid is not None
    return user_token(user.sid, sids, uid=user.uid, gids=gids)


TRUSTEES = [
    "S-1-1-0",
    "S-1-5-11",
    "S-1-5-32-545",
    "S-1-3-0",
    DOMAIN_USERS,
    *(f"{DOMAIN}-{1100 + i}" for i in range(8)),
    *(f"{DOMAIN}-{1200 + i}" for i in range(4)),
    "S-1-22-1-1003",
    "S-1-22-2-2001",
    "S-1-5-21-9-9-9-1000",
]
aces = st.builds(
    NtAce,
    type=st.sampled_from(["allow", "deny"]),
    flags=st.lists(st.sampled_from(list(NtAceFlag)), unique=True, max_size=3).map(tuple),
    mask=st.sampled_from([READ, 0x1, 0x80000000, 0x10000000, 0x001F01FF, 0x00000002, 0x00120116]),
    trustee=st.sampled_from(TRUSTEES),
    conditional=st.booleans(),
)
acls = st.builds(
    lambda dacl, null: NtAcl(source="stored", dacl_present=True, dacl=None if null else tuple(dacl)),
    st.lists(aces, max_size=8),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(nt=acls, seed=st.integers(0, 2**32))
def test_nt_readers_equals_the_per_user_check_on_each_users_token(nt: NtAcl, seed: int) -> None:
    directory = _directory(random.Random(seed))
    admitted, grants = nt_readers(nt, directory.sid_members)
    for name, user in directory.users.items():
        if user.disabled:
            continue
        expected = nt_read_decision(_as_descriptor(nt), _token(directory, name)).allowed
        assert bool(admitted & user.bit) == expected, (name, nt)
    if admitted != EVERYBODY:
        assert admitted == sum(g.people for g in grants)


# -- in the engine -------------------------------------------------------------------------------------------------

FOLDER = "/srv/share/socialkontoret"
POSIX_OPEN = (
    AclEntry(tag=AclTag.USER_OBJ, perms=7),
    AclEntry(tag=AclTag.GROUP_OBJ, perms=7),
    AclEntry(tag=AclTag.OTHER, perms=5),
)


def _engine() -> Engine:
    engine = Engine()
    for i, name in enumerate(("anna", "bo", "cecilia")):
        engine.apply(
            DirectoryUser(
                name=name, uid=1001 + i, primary_gid=100, sid=f"{DOMAIN}-{1101 + i}", primary_group_sid=DOMAIN_USERS
            )
        )
    engine.apply(DirectoryGroup(name="socialsekreterare", gid=3000, sid=f"{DOMAIN}-3000", member_users=("anna",)))
    engine.apply(DirectoryGroup(name="Domain Users", sid=DOMAIN_USERS))
    return engine


def _fs(path: str, nt: NtAcl | None, acl: tuple[AclEntry, ...] = POSIX_OPEN) -> FsPermissionEvent:
    return FsPermissionEvent(
        kind=FsKind.CHANGED,
        path=path,
        object_type=ObjectType.DIRECTORY,
        owner=Identity(id=0),
        group=Identity(id=0),
        mode=0o775,
        acl=acl,
        acl_kind="posix" if nt is None else "nt",
        nt_acl=nt,
    )


def _stored(*dacl: NtAce) -> NtAcl:
    return NtAcl(source="stored", owner="S-1-22-1-0", group="S-1-22-2-0", dacl_present=True, dacl=dacl)


def _open(engine: Engine, folder_event: FsPermissionEvent, label: Label) -> tuple[tuple[str, ...], list[str]]:
    engine.apply(folder_event)
    engine.apply(LabelAssigned(path=FOLDER, label=label))
    verdicts = engine.flush()
    if not verdicts:
        return (), []
    last = verdicts[-1]
    return last.all_users, [g.entry for g in last.grants]


def test_authenticated_users_read_is_an_exposure_explained_by_its_ace() -> None:
    engine = _engine()
    label = Label(name="klienter", allowed_groups=("socialsekreterare",))
    nt = _stored(
        NtAce(type="allow", flags=(NtAceFlag.INHERITED,), mask=READ, trustee="S-1-5-11"),
        NtAce(type="allow", mask=0x001F01FF, trustee=f"{DOMAIN}-3000"),
    )
    users, entries = _open(engine, _fs(FOLDER, nt), label)
    assert users == ("bo", "cecilia")
    assert entries == ["Authenticated Users (S-1-5-11) ALLOW read, inherited"]


def test_a_deny_before_the_allow_and_the_posix_side_both_narrow_the_readers() -> None:
    engine = _engine()
    label = Label(name="klienter", allowed_groups=("socialsekreterare",))
    nt = _stored(
        NtAce(type="deny", mask=READ, trustee=f"{DOMAIN}-1102"),  # bo
        NtAce(type="allow", mask=READ, trustee="S-1-1-0"),
    )
    no_other = (
        *POSIX_OPEN[:2],
        AclEntry(tag=AclTag.USER, qualifier=1003, perms=5),
        AclEntry(tag=AclTag.MASK, perms=7),
        AclEntry(tag=AclTag.OTHER, perms=0),
    )
    users, entries = _open(engine, _fs(FOLDER, nt, no_other), label)
    assert users == ("cecilia",)  # bo denied by NT; anna allowed; cecilia named in POSIX, Everyone in NT
    assert entries == ["Everyone (S-1-1-0) ALLOW read"]


def test_a_stale_blob_leaves_posix_alone_and_an_unreadable_one_says_so() -> None:
    label = Label(name="klienter", allowed_groups=("socialsekreterare",))
    nobody = _stored()
    assert _open(_engine(), _fs(FOLDER, nobody), label) == ((), [])
    # the owner, root, reads by POSIX; it has no SID here, so an NT ACL of its own names it nowhere
    users, entries = _open(_engine(), _fs(FOLDER, NtAcl(source="posix")), label)
    assert users == ("bo", "cecilia", "uid:0") and entries == ["other::", "user::"]
    broken = NtAcl(source="unreadable", error="security.NTACL does not decode: truncated")
    users, entries = _open(_engine(), _fs(FOLDER, broken), label)
    assert users == ("bo", "cecilia", "uid:0")
    note = " [NT ACL unreadable: security.NTACL does not decode: truncated; judged by POSIX alone]"
    assert entries == [f"other::{note}", f"user::{note}"]


def test_a_label_speaks_sids_and_names_alike_domain_users_through_the_primary_group() -> None:
    nt = _stored(NtAce(type="allow", mask=READ, trustee=DOMAIN_USERS))
    by_sid = Label(name="alla", allowed_groups=(DOMAIN_USERS,))
    by_name = Label(name="alla", allowed_groups=("Domain Users",))
    assert _open(_engine(), _fs(FOLDER, nt), by_sid) == ((), [])
    assert _open(_engine(), _fs(FOLDER, nt), by_name) == ((), [])
    just_anna = Label(name="anna", allowed_users=(f"{DOMAIN}-1101",))
    users, entries = _open(_engine(), _fs(FOLDER, nt), just_anna)
    assert users == ("bo", "cecilia") and entries == [f"Domain Users ({DOMAIN_USERS}) ALLOW read"]


def test_samba_unix_id_sids_map_to_posix_ids() -> None:
    engine = _engine()
    label = Label(name="klienter", allowed_groups=("socialsekreterare",))
    nt = _stored(
        NtAce(type="allow", mask=READ, trustee="S-1-22-1-1003"), NtAce(type="allow", mask=READ, trustee="S-1-22-2-3000")
    )
    users, entries = _open(engine, _fs(FOLDER, nt), label)
    assert users == ("cecilia",) and entries == ["cecilia (S-1-22-1-1003) ALLOW read"]


def test_a_member_added_to_a_group_an_nt_ace_names_by_sid_opens_an_exposure() -> None:
    """The membership change reaches the path through the path table's SID index, not a judge-everything pass."""
    engine = _engine()
    engine.apply(DirectoryGroup(name="ekonomi", gid=3001, sid=f"{DOMAIN}-3001", member_users=("anna",)))
    label = Label(name="klienter", allowed_groups=("socialsekreterare",))
    nt = _stored(NtAce(type="allow", mask=READ, trustee=f"{DOMAIN}-3001"))
    assert _open(engine, _fs(FOLDER, nt), label) == ((), [])
    assert engine.folders_depending_on({"ekonomi"}) == {FOLDER}
    engine.apply(DirectoryGroup(name="ekonomi", gid=3001, sid=f"{DOMAIN}-3001", member_users=("anna", "bo")))
    [verdict] = engine.flush()
    assert verdict.all_users == ("bo",) and [g.entry for g in verdict.grants] == [f"ekonomi ({DOMAIN}-3001) ALLOW read"]
    assert [g.group for g in verdict.grants] == ["ekonomi"]


def test_an_engine_with_nt_acls_survives_a_checkpoint() -> None:
    from processor.checkpoint import decode as decode_checkpoint
    from processor.checkpoint import encode as encode_checkpoint

    engine = _engine()
    label = Label(name="klienter", allowed_groups=("socialsekreterare",))
    nt = _stored(NtAce(type="allow", mask=READ, trustee="S-1-5-11"))
    before = _open(engine, _fs(FOLDER, nt), label)
    identity = {"group": "g", "topics": "fs"}
    restored = decode_checkpoint(encode_checkpoint(engine, {}, identity, records=1), identity, source="p").engine
    state = restored.paths.get(FOLDER)
    assert state is not None
    grants = restored.evaluator.verdict(state).via
    assert [v.entry for v in grants] == ["Authenticated Users (S-1-5-11) ALLOW read"] and before[0] == ("bo", "cecilia")


def test_domain_users_without_a_group_entry_are_the_users_whose_primary_group_it_is() -> None:
    """AD's Domain Users is outside most group bases: the primary group SID alone must still resolve."""
    engine = Engine()
    for i, name in enumerate(("anna", "bo")):
        engine.apply(DirectoryUser(name=name, uid=1001 + i, sid=f"{DOMAIN}-{1101 + i}", primary_group_sid=DOMAIN_USERS))
    engine.apply(DirectoryUser(name="gast", uid=1009, sid=f"{DOMAIN}-1109", primary_group_sid=f"{DOMAIN}-514"))
    nt = _stored(NtAce(type="allow", mask=READ, trustee=DOMAIN_USERS))
    users, entries = _open(engine, _fs(FOLDER, nt), Label(name="anna", allowed_users=("anna",)))
    assert users == ("bo",) and entries == [f"Domain Users ({DOMAIN_USERS}) ALLOW read"]
    assert engine.directory.direct_members(DOMAIN_USERS) == engine.directory.user_bit(
        "anna"
    ) | engine.directory.user_bit("bo")


def test_who_can_read_says_from_which_folder_an_inherited_ace_came() -> None:
    from processor.forensics import who_can_read

    engine = _engine()
    oi_ci = (NtAceFlag.OBJECT_INHERIT, NtAceFlag.CONTAINER_INHERIT)
    # GENERIC_READ | GENERIC_EXECUTE: Windows maps them to the child copy's 0x1200A9
    explicit = NtAce(type="allow", flags=oi_ci, mask=0xA0000000, trustee="S-1-5-11")
    copied = NtAce(type="allow", flags=(*oi_ci, NtAceFlag.INHERITED), mask=READ, trustee="S-1-5-11")
    on_file = NtAce(type="allow", flags=(NtAceFlag.INHERITED,), mask=READ, trustee="S-1-5-11")
    engine.apply(_fs(FOLDER, _stored(explicit)))
    engine.apply(_fs(f"{FOLDER}/arkiv", _stored(copied)))
    file = _fs(f"{FOLDER}/arkiv/2019.txt", _stored(on_file)).model_copy(update={"object_type": ObjectType.FILE})
    engine.apply(file)
    engine.apply(LabelAssigned(path=FOLDER, label=Label(name="klienter", allowed_groups=("socialsekreterare",))))
    engine.flush()
    _label, grants = who_can_read(engine, file.path)
    assert {(g.user, g.entry) for g in grants} >= {
        ("bo", f"Authenticated Users (S-1-5-11) ALLOW read, inherited from {FOLDER}"),
    }
    # the chain broken (the folder's ACE removed): the grant still says inherited, but names no folder
    engine.apply(_fs(FOLDER, _stored(NtAce(type="allow", mask=READ, trustee="S-1-5-11"))))
    engine.flush()
    _label, grants = who_can_read(engine, file.path)
    assert ("bo", "Authenticated Users (S-1-5-11) ALLOW read, inherited") in {(g.user, g.entry) for g in grants}


def test_builtin_users_are_whom_the_directory_says_else_everybody() -> None:
    """A standalone Samba without a group mapping puts nobody's token in BUILTIN\\Users (checked against smbd in
    tests/integration/test_samba_oracle.py); unless the directory says so, permwatch assumes everybody."""
    nt = _stored(NtAce(type="allow", mask=READ, trustee="S-1-5-32-545"))
    label = Label(name="anna", allowed_users=("anna",))
    users, entries = _open(_engine(), _fs(FOLDER, nt), label)
    assert users == ("bo", "cecilia") and entries == ["BUILTIN\\Users (S-1-5-32-545) ALLOW read"]
    engine = _engine()
    engine.apply(DirectoryGroup(name="BUILTIN\\Users", sid="S-1-5-32-545", member_users=("bo",)))
    assert _open(engine, _fs(FOLDER, nt), label)[0] == ("bo",)


def test_the_exposure_says_from_which_folder_an_inherited_ace_came() -> None:
    """Issue 16 item 5: alerts say it too, not only who-can-read: the exposure's grant names the folder."""
    engine = _engine()
    oi_ci = (NtAceFlag.OBJECT_INHERIT, NtAceFlag.CONTAINER_INHERIT)
    engine.apply(_fs("/srv/share", _stored(NtAce(type="allow", flags=oi_ci, mask=READ, trustee="S-1-5-11"))))
    inherited = NtAce(type="allow", flags=(*oi_ci, NtAceFlag.INHERITED), mask=READ, trustee="S-1-5-11")
    engine.apply(_fs(FOLDER, _stored(inherited)))
    engine.apply(LabelAssigned(path=FOLDER, label=Label(name="klienter", allowed_groups=("socialsekreterare",))))
    (opened,) = [v for v in engine.flush() if v.status == "opened"]
    assert [g.entry for g in opened.grants] == ["Authenticated Users (S-1-5-11) ALLOW read, inherited from /srv/share"]
    # said once more on no change: the record of the grant is stable
    engine.apply(_fs(FOLDER, _stored(inherited)))
    assert [v for v in engine.flush() if v.folder == FOLDER] == []


def test_an_inherited_grant_names_the_folder_of_the_ace_that_grants_not_of_another_ace_of_its_trustee() -> None:
    """Two inherited ACEs of one trustee, from two folders: the nearer one allows only writing (it admits no
    reader), the farther one allows reading. Their trustee reads the same in the grant's text; the origin is that
    of the ACE the grant came from (its ``Via.ace``), the farther folder."""
    engine = _engine()
    oi_ci = (NtAceFlag.OBJECT_INHERIT, NtAceFlag.CONTAINER_INHERIT)
    reads = NtAce(type="allow", flags=oi_ci, mask=READ, trustee="S-1-5-11")
    writes = NtAce(type="allow", flags=oi_ci, mask=0x2, trustee="S-1-5-11")  # FILE_ADD_FILE alone: no read
    inherited = (*oi_ci, NtAceFlag.INHERITED)
    engine.apply(_fs("/srv/share", _stored(reads)))
    engine.apply(_fs("/srv/share/avd", _stored(writes, reads.model_copy(update={"flags": inherited}))))
    folder = "/srv/share/avd/klienter"
    nearer_first = (writes.model_copy(update={"flags": inherited}), reads.model_copy(update={"flags": inherited}))
    engine.apply(_fs(folder, _stored(*nearer_first)))
    engine.apply(LabelAssigned(path=folder, label=Label(name="klienter", allowed_groups=("socialsekreterare",))))
    (opened,) = [v for v in engine.flush() if v.status == "opened"]
    assert [g.entry for g in opened.grants] == ["Authenticated Users (S-1-5-11) ALLOW read, inherited from /srv/share"]
