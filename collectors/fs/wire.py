"""A path's permission state straight onto the wire: ``fs.permission`` events encoded without the model.

A scan publishes one event per path, and building and serialising the pydantic
model cost more than reading the path from the filesystem. The state a
collector read is already valid by construction (an absolute, normalised path
from the walk, mode bits from ``stat``, entries from a checked ACL xattr), so
this encoder writes the JSON itself from fragments it keeps for the few
distinct owners, groups and ACLs of a tree, leaving out fields at their
defaults (``old_path``, an entry's absent qualifier and name): a first scan
writes a million of these. The bytes decode to exactly the
event :class:`permwatch.events.FsPermissionEvent` would give for the same
state (tests/unit/test_fs_wire.py checks that on generated states); the
model and its documentation stay the contract.

Event ids are this encoder's random prefix and a counter: unique like a
uuid4, at a fraction of the cost.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from datetime import UTC, datetime

from collectors.acl import NameCache
from collectors.fs.read import PathState, memo_by_identity
from permwatch.events import AclEntry, AclKind, FsKind, NtAcl, ObjectType

MAX_FRAGMENTS = 4096
"""Remembered owner/group/ACL fragments before the memo starts again (a tree has few distinct ones)."""


def time_text(when: datetime) -> str:
    """A UTC time as the wire writes it (``2026-11-23T11:13:54.353511Z``)."""
    text = when.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class FsWireEncoder:
    """Encodes permission states of paths as ``fs.permission`` events from one collector (``source``)."""

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
    ) -> bytes:
        """The event's bytes; ``observed_at`` as :func:`time_text` writes it. A POSIX ACL's kind is left
        off, as the model leaves it off, so these are version 1's bytes; an NT ACL follows its kind."""
        kind_field = "" if acl_kind == "posix" else f',"acl_kind":"{acl_kind}"'
        if nt_acl is not None:
            kind_field += f',"nt_acl":{self._nt(nt_acl)}'
        return (
            f'{self._head}{self._prefix}{next(self._counter):x}","observed_at":"{observed_at}",'
            f'"kind":"{kind.value}","path":{_string(path)},'
            f'"object_type":"{object_type.value}","owner":{self._identity(owner)},"group":{self._identity(group)},'
            f'"mode":{mode},"acl":{self._acl(acl)},"default_acl":{self._acl(default_acl)}{kind_field}}}'
        ).encode()

    def encode_state(
        self, path: str, kind: FsKind, state: PathState, names: NameCache, observed_at: str | None = None
    ) -> bytes:
        """:meth:`encode` for a state as read, its owner and group named by ``names``; observed now unless given."""
        return self.encode(
            path,
            kind,
            state.object_type,
            (state.uid, names.user(state.uid)),
            (state.gid, names.group(state.gid)),
            state.mode,
            state.acl,
            state.default_acl,
            self.now() if observed_at is None else observed_at,
            state.acl_kind,
            state.nt_acl,
        )

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
