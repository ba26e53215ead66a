"""Hostile and malformed bus messages for the decoder fuzz tests (unit and integration).

Every message made here is invalid on purpose: what permwatch must do with
each is refuse it with a one-line reason (and, on the bus, dead-letter it).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

VALID_FS = {
    "schema_version": 1,
    "type": "fs.permission",
    "event_id": "e1",
    "observed_at": "2026-11-23T08:00:00Z",
    "source": "fuzz",
    "kind": "changed",
    "path": "/srv/share/x",
    "object_type": "directory",
    "owner": {"id": 0, "name": "root"},
    "group": {"id": 0, "name": "root"},
    "mode": 493,
    "acl": [{"tag": "user_obj", "perms": 7}, {"tag": "group_obj", "perms": 5}, {"tag": "other", "perms": 5}],
    "default_acl": [],
}

_EXTRA_VALUES = [None, -1, 2**70, 1e308, "", "x" * 70_000, "../../etc/shadow", [], {}, {"$gt": ""}, True]


_NOT_STRINGS = [None, -1, 2**70, 1e308, float("nan"), [], {}, [[[[[]]]]], {"$gt": ""}, True]
_INVALID_FIELD_VALUES: list[tuple[str, list[object]]] = [
    ("mode", [None, -1, 2**70, 1e308, float("nan"), "", "493", True, [], {}, 0o10000]),
    (
        "path",
        [*_NOT_STRINGS, "", "x" * 70_000, "../../etc/shadow", "relative/path", "/a/../b", "/a//b", "/a/", "/\u0000"],
    ),
    ("kind", [*_NOT_STRINGS, "", "chmod", "<script>alert(1)</script>"]),
    ("owner", [None, -1, "", "root", [], {"id": "0"}, {"id": True}, {"name": "root"}]),
    ("acl", [None, -1, "", "user::rwx", {}, [None], [{"tag": "user_obj"}], [[]]]),
    ("observed_at", [None, -1, 2**70, 1e308, "", "2026-13-45T99:99:99Z", "yesterday", [], True]),
    ("object_type", [*_NOT_STRINGS, "", "socket-ish"]),
    ("event_id", [None, -1, "", "../../etc/shadow", "a b", "x" * 200, "\u0000", [], True]),
]


def _mutations(rng: random.Random) -> Iterator[bytes]:
    while True:
        choice = rng.randrange(9)
        doc = json.loads(json.dumps(VALID_FS))
        if choice == 0:  # random bytes
            yield rng.randbytes(rng.randrange(1, 300))
        elif choice == 1:  # truncated JSON
            raw = json.dumps(doc).encode()
            yield raw[: rng.randrange(1, len(raw) - 1)]
        elif choice == 2:  # wrong or future schema version
            doc["schema_version"] = rng.choice([0, 2, 99, "1", None])
            yield json.dumps(doc).encode()
        elif choice == 3:  # a field with a hostile value (every pair below is invalid for that field)
            field, values = rng.choice(_INVALID_FIELD_VALUES)
            doc[field] = rng.choice(values)
            yield json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
        elif choice == 4:  # unknown extra field (forbidden)
            doc[f"x{rng.randrange(1000)}"] = rng.choice(_EXTRA_VALUES)
            yield json.dumps(doc, allow_nan=True).encode()
        elif choice == 5:  # unknown type
            doc["type"] = rng.choice(["fs.permissions", "exposure.opened", "", "drop table", 7])
            yield json.dumps(doc).encode()
        elif choice == 6:  # oversized
            doc["path"] = "/" + "a" * 1_100_000
            yield json.dumps(doc).encode()
        elif choice == 7:  # deep nesting
            depth = rng.randrange(100, 2000)
            yield ("[" * depth + "]" * depth).encode()
        else:  # a broken ACL entry
            doc["acl"] = [{"tag": rng.choice(["user", "mask", "bogus"]), "perms": rng.choice([8, -1, "rwx", None])}]
            yield json.dumps(doc).encode()


def fuzzed_messages(count: int, *, seed: int = 20261123) -> list[bytes]:
    rng = random.Random(seed)
    generator = _mutations(rng)
    return [next(generator) for _ in range(count)]
