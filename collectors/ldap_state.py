"""Where the LDAP collector keeps its place across restarts: one small JSON file per server.

The file holds the change mode's cursor (the last accesslog ``reqStart``, a
DirSync cookie, …) and the collector's copy of the in-scope entries — the
state it last published — so a restart resumes the stream and publishes only
what changed, instead of a whole new snapshot. It is replaced atomically
(write, fsync, rename). While a batch is on its way to the bus, the file
also lists ``unconfirmed`` events: the last one of every principal the batch
changed, which a restart publishes again because it cannot know how much of
the batch got out (see ``LdapCollector._commit``). A file written for
another server, base or mode (its ``fingerprint`` differs) or in another
format is ignored, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.ldap_entries import RawEntry
from collectors.ldap_modes import Cursor
from collectors.ldap_settings import LdapCollectorConfig
from permwatch.events import DecodeError, DirectoryGroup, DirectoryUser, Event, decode, encode

log = logging.getLogger("permwatch.collectors.ldap")

FORMAT_VERSION = 1


@dataclass(frozen=True)
class SavedDirectory:
    cursor: Cursor
    entries: list[RawEntry]
    unconfirmed: list[DirectoryUser | DirectoryGroup] = field(default_factory=list)


def fingerprint(config: LdapCollectorConfig) -> str:
    """What the saved copy depends on: the server, where and what it reads, and how it follows changes."""
    scope = config.model_dump(
        mode="json",
        include={
            "uri",
            "user_base",
            "group_base",
            "user_object_classes",
            "group_object_classes",
            "attributes",
            "mode",
            "accesslog_base",
            "referential_integrity",
        },
    )
    return hashlib.sha256(json.dumps(scope, sort_keys=True).encode()).hexdigest()[:32]


class LdapStateFile:
    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint

    def load(self) -> SavedDirectory | None:
        """The saved cursor and entries, or None when there is nothing usable."""
        try:
            raw: Any = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ldap state %s is unreadable (%s); starting from a new snapshot", self.path, exc)
            return None
        if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
            log.warning("ldap state %s has another format; starting from a new snapshot", self.path)
            return None
        if raw.get("fingerprint") != self.fingerprint:
            log.warning("ldap state %s was written for another server or settings; starting anew", self.path)
            return None
        try:
            entries = [RawEntry(item["dn"], {k: tuple(v) for k, v in item["attrs"].items()}) for item in raw["entries"]]
            unconfirmed = [_principal(json.dumps(item).encode()) for item in raw.get("unconfirmed", ())]
            return SavedDirectory(dict(raw["cursor"]), entries, unconfirmed)
        except (KeyError, TypeError, AttributeError, DecodeError) as exc:
            log.warning("ldap state %s is damaged (%r); starting from a new snapshot", self.path, exc)
            return None

    def save(self, cursor: Cursor, entries: list[RawEntry], unconfirmed: Sequence[Event] = ()) -> None:
        document: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "cursor": cursor,
            "entries": [{"dn": e.dn, "attrs": {k: list(v) for k, v in e.attrs.items()}} for e in entries],
        }
        if unconfirmed:
            document["unconfirmed"] = [json.loads(encode(event)) for event in unconfirmed]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            out.write(json.dumps(document, separators=(",", ":")))  # dumps uses the C encoder; dump does not
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)


def _principal(raw: bytes) -> DirectoryUser | DirectoryGroup:
    event = decode(raw)
    if not isinstance(event, DirectoryUser | DirectoryGroup):
        raise DecodeError(f"a {event.type} event is not a directory principal")
    return event
