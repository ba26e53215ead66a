"""The wire contract's fast encoders: ``fs.permission`` events and ``fs.batch`` envelopes written without the models.

A scan publishes one event per path, and building and serialising the pydantic
model cost more than reading the path from the filesystem. The state a
collector read is already valid by construction (an absolute, normalised path
from the walk, mode bits from ``stat``, entries from a checked ACL xattr), so
:class:`FsPermissionEncoder` writes the JSON itself from fragments it keeps for
the few distinct owners, groups and ACLs of a tree, leaving out fields at their
defaults (``old_path``, an entry's absent qualifier and name): a first scan
writes a million of these. The bytes decode to exactly the event
:class:`permwatch.events.FsPermissionEvent` would give for the same state
(tests/unit/test_fs_wire.py checks that on generated states); the models and
their documentation stay the contract, and this module lives beside them so
the two change together. :func:`encode_batch` wraps encoded events of one unit
in the ``fs.batch`` envelope.

Event ids are this encoder's random prefix and a counter: unique like a
uuid4, at a fraction of the cost.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from permwatch.events import (
    SCHEMA_VERSION,
    AclEntry,
    AclKind,
    Actor,
    FsBatch,
    FsKind,
    NtAcl,
    ObjectType,
    new_event_id,
    utcnow,
)

FS_BATCH: str = FsBatch.model_fields["type"].default

MAX_FRAGMENTS = 4096
"""Remembered owner/group/ACL fragments before the memo starts again (a tree has few distinct ones)."""


K = TypeVar("K")
V = TypeVar("V")


def memo_by_identity(compute: Callable[[K], V], limit: int = 4096) -> Callable[[K], V]:
    """``compute`` remembered by its argument's identity, for objects handed out again and again (the
    reader gives every path with the same ACL xattr the same tuple). The memo holds each argument, so
    an id is never reused while remembered; past ``limit`` entries it starts again."""
    memo: dict[int, tuple[K, V]] = {}

    def lookup(argument: K) -> V:
        found = memo.get(id(argument))
        if found is None or found[0] is not argument:
            if len(memo) >= limit:
                memo.clear()
            found = memo[id(argument)] = (argument, compute(argument))
        return found[1]

    return lookup


def time_text(when: datetime) -> str:
    """A UTC time as the wire writes it (``2026-11-23T11:13:54.353511Z``)."""
    text = when.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class FsPermissionEncoder:
    """Encodes permission states of paths as ``fs.permission`` events from one producer (``source``)."""

    def __init__(self, source: str) -> None:
        self._head = '{"schema_version":1,"type":"fs.permission","source":' + json.dumps(source) + ',"event_id":"'
        self._prefix = uuid.uuid4().hex[:20] + "-"
        self._counter = itertools.count()
        self._identities: dict[tuple[int, str | None], str] = {}
        self._acl = memo_by_identity(_entries_json, MAX_FRAGMENTS)
        self._nt = memo_by_identity(_nt_json, MAX_FRAGMENTS)
        self._clock_read = 0.0
        self._clock_text = ""

    def encode(
        self,
        path: str,
        kind: FsKind,
        object_type: ObjectType,
        owner: tuple[int, str | None],
        group: tuple[int, str | None],
        mode: int,
        acl: tuple[AclEntry, ...],
        default_acl: tuple[AclEntry, ...],
        observed_at: str,
        acl_kind: AclKind = "posix",
        nt_acl: NtAcl | None = None,
        actor: Actor | None = None,
    ) -> bytes:
        """The event's bytes; ``observed_at`` as :func:`time_text` writes it. A POSIX ACL's kind is left
        off, as the model leaves it off, so these are version 1's bytes; an NT ACL follows its kind, and the
        actor (#18) follows both, written only when known."""
        kind_field = "" if acl_kind == "posix" else f',"acl_kind":"{acl_kind}"'
        if nt_acl is not None:
            kind_field += f',"nt_acl":{self._nt(nt_acl)}'
        if actor is not None:
            kind_field += ',"actor":' + actor.model_dump_json()
        return (
            f'{self._head}{self._prefix}{next(self._counter):x}","observed_at":"{observed_at}",'
            f'"kind":"{kind.value}","path":{_string(path)},'
            f'"object_type":"{object_type.value}","owner":{self._identity(owner)},"group":{self._identity(group)},'
            f'"mode":{mode},"acl":{self._acl(acl)},"default_acl":{self._acl(default_acl)}{kind_field}}}'
        ).encode()

    def now(self) -> str:
        """The wall clock as :func:`time_text` writes it, written anew at most once a millisecond."""
        now = time.time()
        if now - self._clock_read >= 0.001:
            self._clock_read = now
            self._clock_text = time_text(datetime.fromtimestamp(now, UTC))
        return self._clock_text

    def _identity(self, ident: tuple[int, str | None]) -> str:
        found = self._identities.get(ident)
        if found is None:
            if len(self._identities) >= MAX_FRAGMENTS:
                self._identities.clear()
            named = {"id": ident[0]} if ident[1] is None else {"id": ident[0], "name": ident[1]}
            found = self._identities[ident] = json.dumps(named, ensure_ascii=False, separators=(",", ":"))
        return found


def _entries_json(entries: tuple[AclEntry, ...]) -> str:
    return json.dumps(
        [entry.model_dump(mode="json", exclude_none=True) for entry in entries],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _nt_json(nt_acl: NtAcl) -> str:
    return nt_acl.model_dump_json()


def _string(text: str) -> str:
    """``text`` as a JSON string; most paths need no escaping, and checking is cheaper than escaping."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text, ensure_ascii=False)


def encode_batch(unit: str, source: str, events: Sequence[bytes]) -> bytes:
    """An ``fs.batch`` message (:class:`permwatch.events.FsBatch`) around permission events already encoded,
    oldest first: the envelope is written here, the events' bytes are copied as they are."""
    head = {
        "schema_version": SCHEMA_VERSION,
        "event_id": new_event_id(),
        "observed_at": utcnow().isoformat(),
        "source": source,
        "type": FS_BATCH,
        "unit": unit,
    }
    return json.dumps(head)[:-1].encode() + b', "events": [' + b",".join(events) + b"]}"


M = TypeVar("M", bound=BaseModel)
_FIELDS_SET: dict[type[BaseModel], set[str]] = {}


def constants_of(model: type[BaseModel]) -> dict[str, Any]:
    """The fields of ``model`` every instance has with one value (``schema_version``, ``type``), to start the
    fields handed to :func:`unchecked`."""
    return {
        name: info.default
        for name, info in model.model_fields.items()
        if name in ("schema_version", "type") and not info.is_required()
    }


def unchecked(model: type[M], fields: dict[str, Any]) -> M:
    """``model`` built from ``fields``, every field of it (defaults included, see :func:`constants_of`), valid
    by construction: nothing is validated, filled in or copied, which costs a sixth of ``model_construct``
    (the processor builds one exposure per judged folder). The object is the model's own, so it serialises
    as the contract says. Only for frozen models: they share one set of fields set."""
    fields_set = _FIELDS_SET.get(model)
    if fields_set is None:
        fields_set = _FIELDS_SET[model] = set(model.model_fields)
    if len(fields) != len(fields_set):
        raise TypeError(f"{model.__name__}: fields given {sorted(fields)}, wanted {sorted(fields_set)}")
    built = _new(model)
    _set(built, "__dict__", fields)
    _set_fields_set(built, fields_set)
    _set_extra(built, None)
    _set_private(built, None)
    return built


_new = object.__new__
_set = object.__setattr__
# pydantic's own slots, set through their descriptors: half the cost of object.__setattr__ by name
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
