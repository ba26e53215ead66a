"""The contract's fast encoding of permission events (permwatch/wire.py, fed by collectors/fs/wire.py) decodes to
exactly the event the model gives for the same state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from collectors.fs.wire import FsWireEncoder, time_text
from permwatch.events import (
    AclEntry,
    AclTag,
    Actor,
    DirectoryGroup,
    DirectoryUser,
    FsBatch,
    FsKind,
    FsPermissionEvent,
    Identity,
    NtAce,
    NtAceFlag,
    NtAcl,
    ObjectType,
    decode,
    encode,
)

names = st.none() | st.text(min_size=1, max_size=12)
components = st.text(min_size=1, max_size=12).filter(lambda c: c not in (".", "..") and "/" not in c and "\0" not in c)
paths = st.lists(components, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))
entries = st.builds(
    AclEntry,
    tag=st.sampled_from(list(AclTag)),
    qualifier=st.none() | st.integers(0, 2**32 - 2),
    name=names,
    perms=st.integers(0, 7),
)
acls = st.lists(entries, max_size=6).map(tuple)
sids = st.builds(
    lambda authority, subs: "-".join(["S", "1", str(authority), *map(str, subs)]),
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 2**32 - 1), max_size=15),
)
nt_aces = st.builds(
    NtAce,
    type=st.sampled_from(["allow", "deny"]),
    flags=st.lists(st.sampled_from(list(NtAceFlag)), unique=True, max_size=5).map(tuple),
    mask=st.integers(0, 0xFFFFFFFF),
    trustee=sids,
    conditional=st.booleans(),
)
stored_nt_acls = st.builds(
    lambda owner, group, dacl, null: NtAcl(
        source="stored", owner=owner, group=group, dacl_present=True, dacl=None if null else tuple(dacl)
    ),
    st.none() | sids,
    st.none() | sids,
    st.lists(nt_aces, max_size=6),
    st.booleans(),
)
nt_acls = (
    st.none()
    | stored_nt_acls
    | st.just(NtAcl(source="posix"))
    | st.builds(lambda error: NtAcl(source="unreadable", error=error), st.text(min_size=1, max_size=40))
)
actors = st.none() | st.builds(
    Actor,
    name=names,
    uid=st.none() | st.integers(0, 2**32 - 1),
    process=st.none() | st.text(max_size=15),
    pid=st.none() | st.integers(1, 2**22),
    confidence=st.sampled_from(["pidfd", "proc", "unresolved", "smb_audit", "audit"]),
)
times = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@settings(max_examples=400, deadline=None)
@given(
    path=paths,
    kind=st.sampled_from([FsKind.BASELINE, FsKind.CHANGED, FsKind.CREATED]),
    object_type=st.sampled_from(list(ObjectType)),
    owner=st.tuples(st.integers(0, 2**32 - 1), names),
    group=st.tuples(st.integers(0, 2**32 - 1), names),
    mode=st.integers(0, 0o7777),
    acl=acls,
    default_acl=acls,
    when=times,
    source=st.text(max_size=20),
    nt_acl=nt_acls,
    actor=actors,
)
def test_the_wire_encoding_decodes_to_the_models_event(
    path: str,
    kind: FsKind,
    object_type: ObjectType,
    owner: tuple[int, str | None],
    group: tuple[int, str | None],
    mode: int,
    acl: tuple[AclEntry, ...],
    default_acl: tuple[AclEntry, ...],
    when: datetime,
    source: str,
    nt_acl: NtAcl | None,
    actor: Actor | None,
) -> None:
    wire = FsWireEncoder(source)
    acl_kind = "posix" if nt_acl is None else "nt"
    value = wire.encode(
        path, kind, object_type, owner, group, mode, acl, default_acl, time_text(when), acl_kind, nt_acl, actor
    )
    got = decode(value)
    assert isinstance(got, FsPermissionEvent)
    expected = FsPermissionEvent(
        event_id=got.event_id,
        observed_at=when,
        source=source,
        kind=kind,
        path=path,
        object_type=object_type,
        owner=Identity(id=owner[0], name=owner[1]),
        group=Identity(id=group[0], name=group[1]),
        mode=mode,
        acl=acl,
        default_acl=default_acl,
        acl_kind=acl_kind,
        nt_acl=nt_acl,
        actor=actor,
    )
    assert got == expected
    assert decode(encode(expected)) == got


def test_event_ids_are_distinct_and_times_keep_their_microseconds() -> None:
    wire = FsWireEncoder("fs")
    owner = (0, "root")
    when = datetime(2026, 11, 23, 11, 13, 54, 353511, tzinfo=UTC)
    values = [
        wire.encode(f"/srv/f{i}", FsKind.CHANGED, ObjectType.FILE, owner, owner, 0o640, (), (), time_text(when))
        for i in range(1000)
    ]
    events = [decode(v) for v in values]
    assert len({e.event_id for e in events}) == 1000
    assert {e.observed_at for e in events} == {when}
    assert time_text(when) == "2026-11-23T11:13:54.353511Z"
    assert time_text(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"


VERSION_1_EVENT = (
    b'{"schema_version":1,"event_id":"e1","observed_at":"2026-11-16T09:30:00Z","source":"fs","type":"fs.permission",'
    b'"kind":"changed","path":"/srv/share/ledning","old_path":null,"object_type":"directory",'
    b'"owner":{"id":0,"name":"root"},"group":{"id":20001,"name":"ledningsgrupp"},"mode":504,'
    b'"acl":[{"tag":"user_obj","qualifier":null,"name":null,"perms":7},'
    b'{"tag":"group","qualifier":20002,"name":"alla","perms":5}],"default_acl":[]}'
)
"""A POSIX permission event exactly as the model encoded it before events carried an ``acl_kind``."""


def test_a_version_1_posix_event_decodes_and_encodes_to_the_same_bytes() -> None:
    event = decode(VERSION_1_EVENT)
    assert isinstance(event, FsPermissionEvent)
    assert event.acl_kind == "posix"
    assert encode(event) == VERSION_1_EVENT
    batch = FsBatch(event_id="b1", observed_at=event.observed_at, source="fs", unit=event.path, events=(event,))
    assert VERSION_1_EVENT in encode(batch)


def test_the_fast_encoder_leaves_a_posix_acl_kind_off_as_the_model_does() -> None:
    wire = FsWireEncoder("fs")
    value = wire.encode(
        "/srv/x", FsKind.CHANGED, ObjectType.DIRECTORY, (0, None), (0, None), 0o755, (), (), "2026-11-16T09:30:00Z"
    )
    assert b"acl_kind" not in value


def test_an_nt_event_needs_its_nt_acl_and_a_posix_one_has_none() -> None:
    state = {"kind": "changed", "path": "/srv/x", "owner": Identity(id=0), "group": Identity(id=0), "mode": 0o755}
    with pytest.raises(ValidationError, match="acl_kind 'nt' needs nt_acl"):
        FsPermissionEvent(**state, acl_kind="nt")
    with pytest.raises(ValidationError, match="nt_acl needs acl_kind 'nt'"):
        FsPermissionEvent(**state, nt_acl=NtAcl(source="posix"))
    with pytest.raises(ValidationError, match="an unreadable NT ACL says why"):
        NtAcl(source="unreadable")
    with pytest.raises(ValidationError, match="error is given only when"):
        NtAcl(source="posix", error="x")
    with pytest.raises(ValidationError, match="carries no descriptor"):
        NtAcl(source="posix", owner="S-1-5-11")
    with pytest.raises(ValidationError, match="trustee"):
        NtAce(type="allow", mask=1, trustee="Everyone")


def test_directory_events_without_sids_keep_their_version_1_bytes() -> None:
    user = DirectoryUser(event_id="u1", observed_at=datetime(2026, 1, 1, tzinfo=UTC), name="anna", uid=1000)
    group = DirectoryGroup(event_id="g1", observed_at=datetime(2026, 1, 1, tzinfo=UTC), name="alla", gid=20002)
    assert b"sid" not in encode(user) and b"sid" not in encode(group)
    with_sid = user.model_copy(update={"sid": "S-1-5-21-1-2-3-1104", "primary_group_sid": "S-1-5-21-1-2-3-513"})
    assert decode(encode(with_sid)) == with_sid


def test_an_event_without_an_actor_is_version_1s_bytes_and_one_with_an_actor_says_who_and_how_sure() -> None:
    event = decode(VERSION_1_EVENT)
    assert isinstance(event, FsPermissionEvent) and event.actor is None
    assert b"actor" not in encode(event)
    who = Actor(name="cecilia", uid=33203, process="setfacl", pid=4242, confidence="pidfd")
    attributed = event.model_copy(update={"actor": who})
    assert encode(attributed) == VERSION_1_EVENT[:-1] + (
        b',"actor":{"name":"cecilia","uid":33203,"process":"setfacl","pid":4242,"confidence":"pidfd"}}'
    )
    assert decode(encode(attributed)) == attributed
    assert who.text() == "cecilia"
    assert Actor(uid=33203, confidence="proc").text() == "uid 33203"
    assert Actor(pid=4242, confidence="unresolved").text() is None
