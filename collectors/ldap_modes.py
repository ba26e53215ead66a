"""The change-stream protocol: how the LDAP collector learns what changed on a server.

A mode turns whatever the server offers (OpenLDAP's accesslog, a periodic
re-read, later 389 DS persistent search or AD DirSync) into a sequence of
:class:`EntryChange` — "this entry now looks like this, changed by whom,
when" — starting from a durable ``cursor`` the collector saves after each
batch. Modes are registered by name in ``collectors.ldap.CHANGE_MODES``; the
config's ``mode`` key picks one. A mode never publishes: the collector's
mirror turns changes into directory events.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from collectors.ldap_entries import EntrySchema, RawEntry
from collectors.ldap_session import LdapSession
from collectors.ldap_settings import LdapCollectorConfig

Cursor = dict[str, Any]
"""A mode's position in its change stream; JSON-serialisable, saved in the collector's state file."""


@dataclass(frozen=True)
class EntryChange:
    """The entry at ``dn`` now looks like ``entry`` (which may carry a new DN: a rename), or is gone (None)."""

    dn: str
    entry: RawEntry | None
    actor: str | None = None
    changed_at: datetime | None = None


class EntryLookup(Protocol):
    """The collector's current copy of the directory, as a mode may consult it."""

    def get(self, dn: str) -> RawEntry | None: ...

    def dns(self) -> Iterable[str]: ...


class ChangeGap(Exception):
    """The stream cannot be followed from the cursor (e.g. the log was purged past it): resnapshot."""


class ChangeMode(Protocol):
    """One way of following a server's changes. Constructed as ``Mode(config, schema)``."""

    cursor: Cursor

    def mark(self, session: LdapSession) -> None:
        """Move the cursor to the server's present; called just before a full snapshot is read."""

    def poll(self, session: LdapSession, mirror: EntryLookup) -> Iterator[EntryChange]:
        """Changes since the cursor, oldest first, advancing the cursor; raise :class:`ChangeGap` when it cannot.

        The collector applies each change to ``mirror`` before asking for the
        next, so a mode may read the entry's current state from it. A change
        the mirror already reflects (a replay) should be skipped or harmless.
        """
        ...


class ModeFactory(Protocol):
    def __call__(self, config: LdapCollectorConfig, schema: EntrySchema) -> ChangeMode: ...
