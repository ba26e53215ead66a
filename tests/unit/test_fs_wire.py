"""The filesystem collector's own encoding of permission events (collectors/fs/wire.py) decodes to
exactly the event the model gives for the same state."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.fs.wire import FsWireEncoder, time_text
from permwatch.events import (
    AclEntry,
    AclTag,
    Actor,
    FsBatch,
    FsKind,
    FsPermissionEvent,
    Identity,
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
    actor: Actor | None,
) -> None:
    wire = FsWireEncoder(source)
    value = wire.encode(path, kind, object_type, owner, group, mode, acl, default_acl, time_text(when), actor=actor)
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
