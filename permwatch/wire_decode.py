"""The wire contract's fast decoder: ``fs.permission`` events (alone or in an ``fs.batch``) read without the models.

The processor decodes every record it reads, and pydantic's validation of a
permission event (five ACL entry models, two identities, a path, a time, the
model's own rules) cost several times the JSON parse itself: it was a third of
a replay and the bound of the live path (issue 21). Almost every record has the
same narrow shape: the one the collectors' encoder writes. :func:`decode_fast`
parses the JSON once (pydantic-core's parser, the one ``decode`` uses), checks
that shape field by field with the contract's own rules (the same path check,
the same limits, numbers that are ints and not booleans), takes the few
distinct owners, groups and ACLs of a tree from a memo of models that pydantic
validated, and builds the event without validating it again.

Anything outside that shape, or anything it is unsure of, goes to
:func:`permwatch.events.decode`: every other event type, an actor, an NT ACL,
a time in another form, any value it would refuse. So the result is exactly
``decode``'s, the same event or the same :class:`~permwatch.events.DecodeError`
(tests/unit/test_wire_decode.py checks that over every event kind, the fuzzed
hostile records and generated variants). The models stay the contract; this
module lives beside them so the two change together.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from datetime import UTC, datetime
from typing import Any

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError

from permwatch.events import (
    MAX_BATCH,
    MAX_MESSAGE_BYTES,
    SCHEMA_VERSION,
    AclEntry,
    AnyEvent,
    FsBatch,
    FsKind,
    FsPermissionEvent,
    Identity,
    ObjectType,
    _check_path,
    decode,
)
from permwatch.wire import MAX_FRAGMENTS

_FS_TYPE: str = FsPermissionEvent.model_fields["type"].default
_BATCH_TYPE: str = FsBatch.model_fields["type"].default
_FS_FIELDS = frozenset(FsPermissionEvent.model_fields)
_BATCH_FIELDS = frozenset(FsBatch.model_fields)
_KINDS = {kind.value: kind for kind in FsKind}
_OBJECT_TYPES = {object_type.value: object_type for object_type in ObjectType}
_EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# the forms the collectors write (time_text, isoformat in UTC); any other form is left to the model
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6})?(Z|\+00:00)")
_ACL_ADAPTER: TypeAdapter[tuple[AclEntry, ...]] = TypeAdapter(tuple[AclEntry, ...])
_IDENTITY_ADAPTER: TypeAdapter[Identity] = TypeAdapter(Identity)

_new = object.__new__
_set = object.__setattr__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


class _Unsure(Exception):
    """The record is not of the shape this decoder reads: the models decide."""


def decode_fast(raw: bytes | None) -> AnyEvent:
    """Exactly :func:`permwatch.events.decode` (the same event, or the same error), faster for permission events."""
    if raw is None or len(raw) > MAX_MESSAGE_BYTES or b'"fs.' not in raw:
        return decode(raw)
    try:
        data = pydantic_core.from_json(raw)
        if type(data) is dict:
            kind = data.get("type")
            if kind == _FS_TYPE:
                return _fs_permission(data)
            if kind == _BATCH_TYPE:
                return _fs_batch(data)
    except (_Unsure, ValueError, TypeError, AttributeError, KeyError):
        pass
    return decode(raw)


def _fs_permission(data: dict[str, Any]) -> FsPermissionEvent:
    if not data.keys() <= _FS_FIELDS or data.get("type", _FS_TYPE) != _FS_TYPE:  # (a batch's events may omit it)
        raise _Unsure
    fields = _common(data)
    fields["type"] = _FS_TYPE
    kind = _KINDS[data["kind"]]
    fields["kind"] = kind
    fields["path"] = _path(data["path"])
    old_path = data.get("old_path")
    fields["old_path"] = None if old_path is None else _path(old_path)
    object_type = data.get("object_type", "directory")
    fields["object_type"] = _OBJECT_TYPES[object_type] if type(object_type) is str else _unsure()
    owner, group, mode = _identity(data.get("owner")), _identity(data.get("group")), data.get("mode")
    if mode is not None and (type(mode) is not int or not 0 <= mode <= 0o7777):
        raise _Unsure
    fields["owner"], fields["group"], fields["mode"] = owner, group, mode
    fields["acl"] = _acl(data.get("acl", _ABSENT))
    fields["default_acl"] = _acl(data.get("default_acl", _ABSENT))
    if data.get("acl_kind", "posix") != "posix" or data.get("nt_acl") is not None or data.get("actor") is not None:
        raise _Unsure  # an NT ACL or an actor: the models read those
    fields["acl_kind"], fields["nt_acl"], fields["actor"] = "posix", None, None
    # the model's own rules (FsPermissionEvent._state_unless_deleted) for a POSIX event
    if kind is not FsKind.DELETED and (mode is None or owner is None or group is None):
        raise _Unsure
    if kind is FsKind.MOVED and old_path is None:
        raise _Unsure
    return _built(FsPermissionEvent, fields, set(data))


def _fs_batch(data: dict[str, Any]) -> FsBatch:
    if not data.keys() <= _BATCH_FIELDS:
        raise _Unsure
    fields = _common(data)
    fields["type"] = _BATCH_TYPE
    unit = fields["unit"] = _path(data["unit"])
    items = data["events"]
    if type(items) is not list or not 1 <= len(items) <= MAX_BATCH:
        raise _Unsure
    events = tuple(_fs_permission(item) if type(item) is dict else _unsure() for item in items)
    prefix = unit.rstrip("/") + "/"
    for event in events:
        if event.path != unit and not event.path.startswith(prefix):
            raise _Unsure
    fields["events"] = events
    return _built(FsBatch, fields, set(data))


def _common(data: dict[str, Any]) -> dict[str, Any]:
    """The fields every event carries, checked as :class:`permwatch.events.Event` checks them (given, not defaulted)."""
    version, event_id, observed_at = data["schema_version"], data["event_id"], data["observed_at"]
    source = data.get("source", "")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise _Unsure
    if type(event_id) is not str or not _EVENT_ID.fullmatch(event_id):
        raise _Unsure
    if type(source) is not str or len(source) > 256:
        raise _Unsure
    if type(observed_at) is not str or not _TIME.fullmatch(observed_at):
        raise _Unsure
    at = datetime.fromisoformat(observed_at)  # a ValueError (Feb 30th) leaves it to the model
    return {"schema_version": version, "event_id": event_id, "observed_at": at.astimezone(UTC), "source": source}


def _path(path: object) -> str:
    if type(path) is not str or not 1 <= len(path) <= 4096:
        raise _Unsure
    _check_path(path)  # the contract's own check; its ValueError leaves the record to the model
    return path


def _unsure() -> Any:
    raise _Unsure


# Owners, groups and ACLs repeat across a tree: each distinct one is validated by pydantic once and shared
# (the models are frozen), remembered by its parsed JSON (key order included: another order is another entry).
_ABSENT: Any = object()
_PLAIN = frozenset({str, int, type(None)})
"""the types a memo key may hold: a bool or a float would be taken for the int it equals"""
_identities: dict[Hashable, Identity] = {}
_acls: dict[Hashable, tuple[AclEntry, ...]] = {}


def _identity(value: object) -> Identity | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise _Unsure
    key = tuple(value.items())
    if not {type(v) for v in value.values()} <= _PLAIN:
        raise _Unsure  # (a key holds values: false is 0 and 1.0 is 1 to a dict, not to the contract)
    found = _identities.get(key)
    if found is None:
        found = _validated(_IDENTITY_ADAPTER, value)
        if len(_identities) >= MAX_FRAGMENTS:
            _identities.clear()
        _identities[key] = found
    return found


def _acl(value: object) -> tuple[AclEntry, ...]:
    if value is _ABSENT:
        return ()
    if type(value) is not list:
        raise _Unsure
    key = tuple(tuple(entry.items()) for entry in value)  # an entry that is not an object: AttributeError, unsure
    if not {type(v) for entry in value for v in entry.values()} <= _PLAIN:
        raise _Unsure
    found = _acls.get(key)
    if found is None:
        found = _validated(_ACL_ADAPTER, value)
        if len(_acls) >= MAX_FRAGMENTS:
            _acls.clear()
        _acls[key] = found
    return found


def _validated(adapter: TypeAdapter[Any], value: object) -> Any:
    """``value`` validated as the JSON it came from (JSON mode: the mode ``decode`` validates in)."""
    try:
        return adapter.validate_json(pydantic_core.to_json(value))
    except ValidationError:
        raise _Unsure from None


def _built(model: type[Any], fields: dict[str, Any], given: set[str]) -> Any:
    """``model`` from checked ``fields`` (each field, in the model's order) and pydantic's note of which were given."""
    built = _new(model)
    _set(built, "__dict__", {name: fields[name] for name in model.model_fields})
    _set_fields_set(built, given)
    _set_extra(built, None)
    _set_private(built, None)
    return built
