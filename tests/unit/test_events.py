"""The wire contract: round trips, keys, and one-line reasons for what does not decode."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from permwatch.events import (
    DecodeError,
    DirectoryGroup,
    FsKind,
    FsPermissionEvent,
    Identity,
    Label,
    LabelAssigned,
    decode,
    encode,
    exposure_id_for,
)


def test_round_trip_and_keys() -> None:
    event = FsPermissionEvent(
        kind=FsKind.CHANGED, path="/srv/share/a", mode=0o750, owner=Identity(id=0), group=Identity(id=0)
    )
    assert decode(encode(event)) == event
    assert (event.topic, event.key) == ("fs", "/srv/share/a")
    group = DirectoryGroup(name="alla", dn="cn=alla,ou=groups,dc=example")
    assert (group.topic, group.key) == ("directory", "cn=alla,ou=groups,dc=example")
    assert DirectoryGroup(name="alla").key == "group:alla"
    label = LabelAssigned(path="/srv/x", label=Label(name="ledning"))
    assert (label.topic, label.key) == ("labels", "/srv/x")


def test_exposure_ids_are_stable() -> None:
    assert exposure_id_for("/a", "l", "e1") == exposure_id_for("/a", "l", "e1")
    assert exposure_id_for("/a", "l", "e1") != exposure_id_for("/a", "l", "e2")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "Invalid JSON"),
        (b"[]", "invalid"),
        (
            json.dumps({"type": "fs.permission", "schema_version": 2, "kind": "changed", "path": "/a"}).encode(),
            "schema_version",
        ),
        (json.dumps({"type": "nope"}).encode(), "unknown or missing event type"),
        (
            json.dumps({"type": "fs.permission", "kind": "changed", "path": "/a", "mode": 99999}).encode(),
            "invalid fs.permission.mode",
        ),
        (json.dumps({"type": "fs.permission", "kind": "changed", "path": "/a", "evil": 1}).encode(), "evil"),
        (json.dumps({"type": "fs.permission", "kind": "deleted", "path": "/a/../etc"}).encode(), "normalised"),
        (json.dumps({"type": "fs.permission", "kind": "deleted", "path": "a/b"}).encode(), "absolute"),
        (json.dumps({"type": "fs.permission", "kind": "changed", "path": "/a"}).encode(), "needs mode"),
        (
            json.dumps({"type": "fs.permission", "kind": "deleted", "path": "/a", "event_id": "../x"}).encode(),
            "event_id",
        ),
        (b"x" * 2_000_000, "too large"),
        (json.dumps({"type": "\n\x1b[31mforged log line"}).encode(), "unknown or missing event type"),
        (None, "tombstone"),
    ],
)
def test_bad_messages_have_one_line_reasons(raw: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(raw)
    assert reason in err.value.reason
    assert "\n" not in err.value.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512) | st.text(max_size=256).map(str.encode))
def test_decode_never_raises_anything_but_decode_error(raw: bytes) -> None:
    try:
        decode(raw)
    except DecodeError as exc:
        assert exc.reason and "\n" not in exc.reason


@pytest.mark.parametrize(
    "when",
    ["2026-11-16T09:30:00", "2026-11-16", "1700000000", "16/11/2026 09:30", 1700000000],
)
def test_times_need_a_date_a_time_and_an_offset(when: object) -> None:
    raw = json.dumps({"type": "directory.user", "schema_version": 1, "name": "anna", "observed_at": when}).encode()
    with pytest.raises(DecodeError, match="observed_at"):
        decode(raw)


def test_times_are_kept_in_utc() -> None:
    raw = b'{"type": "directory.user", "schema_version": 1, "name": "anna", "observed_at": "2026-11-16T10:30:00+01:00"}'
    assert decode(raw).observed_at.isoformat() == "2026-11-16T09:30:00+00:00"


def test_counts_and_paths_are_taken_literally() -> None:
    scan = {"type": "fs.scan_completed", "schema_version": 1, "root": "/srv", "paths_changed": 0, "seconds": 1.0}
    with pytest.raises(DecodeError, match="paths_seen"):
        decode(json.dumps({**scan, "paths_seen": "5"}).encode())
    with pytest.raises(DecodeError, match="root"):
        decode(json.dumps({**scan, "paths_seen": 5, "root": "srv/../x"}).encode())
    label = {"type": "label.assigned", "schema_version": 1, "path": "/srv/share/../ledning", "label": None}
    with pytest.raises(DecodeError, match="path"):
        decode(json.dumps(label).encode())


def test_fields_added_after_version_1_are_left_off_only_while_unset():
    """Each later field is dropped at its unset value (so old records keep their bytes) and kept otherwise,
    False and 0 included where they mean something: a remote NT ACL says ``bypass_traverse: false``."""
    from datetime import UTC, datetime

    from permwatch.events import Approval, ExposureEvent, FsKind, FsPermissionEvent, Label, NtAcl, decode, encode

    remote = NtAcl(source="smb", error="no access", bypass_traverse=False)
    assert '"bypass_traverse":false' in remote.model_dump_json()
    assert "bypass_traverse" not in NtAcl(source="posix").model_dump_json()
    over_smb = FsPermissionEvent(kind=FsKind.BASELINE, path="/share/a", acl_kind="nt", nt_acl=remote)
    assert decode(encode(over_smb)).nt_acl == remote

    opened = datetime(2026, 12, 7, tzinfo=UTC)
    plain = ExposureEvent(
        exposure_id="exp-1",
        sequence=0,
        status="opened",
        folder="/srv/a",
        label=Label(name="l"),
        people=1,
        paths_affected=1,
        opened_at=opened,
    )
    wire = plain.model_dump()
    for later in ("actor_confidence", "actor_unresolved", "approval", "preexisting"):
        assert later not in wire
    assert "personal_data" not in wire["label"]
    detailed = plain.model_copy(
        update={
            "actor_unresolved": 2,
            "preexisting": True,
            "approval": Approval(by="soc", until=opened),
        }
    )
    back = decode(encode(detailed))
    assert (back.actor_unresolved, back.preexisting, back.approval) == (2, True, detailed.approval)
