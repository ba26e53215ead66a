"""The processor's fast decoder (permwatch/wire_decode.py) gives exactly what the models give: the same event (same
type, same fields, same fields-given note, times in UTC) or the same one-line refusal, over every event kind,
4,000 of the fuzzed hostile records, generated permission events and batches, and generated variants of them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.fs.wire import FsWireEncoder, time_text
from permwatch import wire_decode
from permwatch.events import (
    AclEntry,
    AclTag,
    AnyEvent,
    DecodeError,
    FsBatch,
    FsKind,
    FsPermissionEvent,
    Identity,
    ObjectType,
    decode,
    encode,
)
from permwatch.wire import encode_batch
from permwatch.wire_decode import decode_fast
from tests.fuzz_messages import VALID, fuzzed_messages

fuzz = settings(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(decoder: Any, raw: bytes | None) -> tuple[str, object]:
    try:
        event: AnyEvent = decoder(raw)
    except DecodeError as exc:
        return "refused", exc.reason
    return "event", described(event)


def described(event: object) -> object:
    """Everything about a decoded value that can differ: its type, fields (recursively), which were given, tzinfo."""
    from pydantic import BaseModel

    if isinstance(event, BaseModel):
        fields = {name: described(getattr(event, name)) for name in type(event).model_fields}
        return (type(event).__name__, fields, sorted(event.model_fields_set))
    if isinstance(event, tuple):
        return tuple(described(item) for item in event)
    if isinstance(event, datetime):
        return (event, event.tzinfo)
    return (type(event).__name__, event)


def assert_same(raw: bytes | None) -> tuple[str, object]:
    slow, fast = outcome(decode, raw), outcome(decode_fast, raw)
    assert fast == slow, raw
    return slow


def test_every_valid_message_of_every_kind_decodes_the_same() -> None:
    for type_, doc in VALID.items():
        kind, _ = assert_same(json.dumps(doc).encode())
        assert kind == "event", type_


def test_four_thousand_hostile_records_are_refused_with_the_same_reasons() -> None:
    refused = 0
    for message in fuzzed_messages(4_000):
        kind, _ = assert_same(message.value)
        refused += kind == "refused"
    assert refused >= 3_400  # most are refused; the rest decode, as another type than their topic wants


def test_what_the_collectors_encoder_writes_decodes_the_same_and_takes_the_fast_path() -> None:
    encoder = FsWireEncoder("fs@host")
    acl = (
        AclEntry(tag=AclTag.USER_OBJ, perms=7),
        AclEntry(tag=AclTag.GROUP, qualifier=20002, name="alla", perms=5),
        AclEntry(tag=AclTag.MASK, perms=5),
    )
    raws = [
        encoder.encode(f"/srv/share/a/f{i}", kind, ObjectType.FILE, (0, "root"), (20001, None), 0o640, acl, (), at)
        for i, (kind, at) in enumerate(
            [(FsKind.CHANGED, time_text(datetime(2026, 12, 7, 9, 0, 0, 123456, UTC))), (FsKind.BASELINE, encoder.now())]
        )
    ]
    for raw in raws:
        assert assert_same(raw)[0] == "event"
    batch = encode_batch("/srv/share/a", "fs@host", raws)
    assert assert_same(batch)[0] == "event"
    assert isinstance(decode_fast(batch), FsBatch)


def test_records_of_the_collectors_shape_never_reach_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is taken (not a copy of the slow one): with the models' decode made to fail, records of the
    common shape, alone and batched, still decode; another kind of event goes to the models."""
    fs = json.dumps(VALID["fs.permission"]).encode()
    batch = json.dumps(VALID["fs.batch"]).encode()
    expected = decode(fs), decode(batch)

    def refuse(raw: bytes | None) -> AnyEvent:
        raise AssertionError("reached the models")

    monkeypatch.setattr(wire_decode, "decode", refuse)
    assert (decode_fast(fs), decode_fast(batch)) == expected
    with pytest.raises(AssertionError, match="reached the models"):
        decode_fast(json.dumps(VALID["directory.user"]).encode())


paths = st.sampled_from(
    ["/", "/srv", "/srv/share/x", "/srv/share/x/ä ö", "srv/x", "/srv//x", "/srv/./x", "/a\x00b", ""]
)
times = st.sampled_from(
    [
        "2026-11-23T08:00:00Z",
        "2026-11-23T08:00:00.123Z",
        "2026-11-23T08:00:00.123456Z",
        "2026-11-23T08:00:00.123456+00:00",
        "2026-11-23T08:00:00.123456789Z",
        "2026-11-23T08:00:00+02:00",
        "2026-11-23T08:00Z",
        "2026-02-30T08:00:00Z",
        "2026-11-23T24:00:00Z",
        "2026-11-23T08:00:00",
        "2026-11-23T08:00:00Z\n",
        "2026-11-23",
        "1763884800",
    ]
)
values = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5000)
    | st.sampled_from([0.0, 4.0, 2**64, -1, [], {}, [1]])
    | st.text(max_size=6)
    | st.sampled_from(["changed", "deleted", "moved", "baseline", "file", "directory", "posix", "nt"])
    | paths
    | times
)
good_paths = st.sampled_from(["/", "/srv", "/srv/share/x", "/srv/share/x/ä ö", "/srv/share/x/y.txt"])
good_times = st.sampled_from(["2026-11-23T08:00:00Z", "2026-11-23T08:00:00.123Z", "2026-11-23T08:00:00.123456+00:00"])
entries = st.fixed_dictionaries(
    {"tag": st.sampled_from([t.value for t in AclTag]), "perms": st.integers(0, 7)},
    optional={"qualifier": st.none() | st.integers(0, 70000), "name": st.none() | st.text(max_size=4)},
)
identities = st.fixed_dictionaries({"id": st.integers(0, 70000)}, optional={"name": st.none() | st.text(max_size=4)})
good_fs_docs = st.fixed_dictionaries(
    {"schema_version": st.just(1), "event_id": st.sampled_from(["e1", "e-1.x:y", "0123abcd"]),
     "observed_at": good_times, "type": st.just("fs.permission"),
     "kind": st.sampled_from(["changed", "created", "deleted", "moved", "baseline"]), "path": good_paths,
     "owner": identities, "group": identities, "mode": st.integers(0, 0o7777)},
    optional={"source": st.sampled_from(["", "fs@host"]), "old_path": st.none() | good_paths,
              "object_type": st.sampled_from(["directory", "file", "symlink", "other"]),
              "acl": st.lists(entries, max_size=4), "default_acl": st.lists(entries, max_size=2),
              "acl_kind": st.just("posix"), "actor": st.none(), "nt_acl": st.none()},
)  # fmt: skip
FIELDS = [*sorted(FsPermissionEvent.model_fields), "extra"]
mutations = st.tuples(st.sampled_from(FIELDS), st.sampled_from(["drop", "set", "in_acl", "in_owner"]), values)


def mutated(doc: dict[str, Any], mutation: tuple[str, str, object] | None) -> dict[str, Any]:
    """``doc`` with one field dropped or set to another value, or an ACL entry's or the owner's field set."""
    if mutation is None:
        return doc
    name, how, value = mutation
    doc = json.loads(json.dumps(doc))
    if how == "drop" and name not in ("event_id", "observed_at"):  # (those two default to a new id, the clock)
        doc.pop(name, None)
    elif how == "in_acl" and doc.get("acl"):
        doc["acl"][0][name if name in ("tag", "qualifier", "name", "perms") else "perms"] = value
    elif how == "in_owner" and "owner" in doc:
        doc["owner"][name if name in ("id", "name") else "id"] = value
    else:
        doc[name] = value
    return doc


fs_docs = st.builds(mutated, good_fs_docs, st.none() | mutations)


@settings(fuzz, max_examples=1_500)
@given(doc=fs_docs)
def test_generated_permission_events_valid_or_not_decode_the_same(doc: dict[str, Any]) -> None:
    assert_same(json.dumps(doc, ensure_ascii=False).encode())


@settings(fuzz, max_examples=500)
@given(
    unit=paths,
    docs=st.lists(fs_docs, min_size=0, max_size=3),
    same_unit=st.booleans(),
    envelope=st.dictionaries(st.sampled_from(["source", "extra", "observed_at"]), values, max_size=1),
)
def test_generated_batches_decode_the_same(
    unit: str, docs: list[dict[str, Any]], same_unit: bool, envelope: dict[str, Any]
) -> None:
    if same_unit:
        docs = [{**doc, "path": unit.rstrip("/") + "/f"} for doc in docs]
    batch = {"schema_version": 1, "event_id": "b1", "observed_at": "2026-11-23T08:00:00.5+00:00", "source": "s",
             "type": "fs.batch", "unit": unit, "events": docs, **envelope}  # fmt: skip
    assert_same(json.dumps(batch, ensure_ascii=False).encode())


def test_a_duplicate_key_and_trailing_bytes_decode_the_same() -> None:
    text = json.dumps(VALID["fs.permission"])
    for raw in (
        text[:-1] + ', "mode": 420}',
        text[:-1] + ', "mode": true}',
        text[:-1] + ', "path": "/x/../y"}',
        text + " ",
        text + "x",
        text.replace('"fs.permission"', '"fs.permission\\u0000"'),
        text.replace('"/srv/share/x"', '"/srv/share/\\ud800"'),
    ):
        assert_same(raw.encode("utf-8", "surrogatepass"))
    assert_same(None)
    assert_same(b"")


def test_the_events_built_on_the_fast_path_encode_to_the_bytes_the_models_write() -> None:
    event = FsPermissionEvent(
        kind=FsKind.CHANGED,
        path="/srv/share/x/y",
        object_type=ObjectType.FILE,
        owner=Identity(id=0, name="root"),
        group=Identity(id=20001),
        mode=0o640,
        acl=(AclEntry(tag=AclTag.USER_OBJ, perms=6), AclEntry(tag=AclTag.OTHER, perms=0)),
        source="fs@host",
    )
    raw = encode(event)
    fast = decode_fast(raw)
    assert fast == event and encode(fast) == raw
