"""The "snapshot" change mode: find changes by re-reading the directory, for any server.

Each poll lists the in-scope entries with only their change stamp
(``entryCSN``, else ``modifyTimestamp``) and unique id, re-reads in full just
the entries whose stamp moved or that are new, and reports entries no longer
listed as deleted — or as renamed, when an entry with the same unique id
(``entryUUID``, AD's ``objectGUID``) turned up under another DN. Without
stamps every entry is re-read and compared. Who changed an entry is the
server's ``modifiersName`` where it keeps one; a deletion has no author here.
Nothing needs a cursor: the collector's copy of the directory is the position.
"""

from __future__ import annotations

from collections.abc import Iterator

from collectors.ldap_entries import EntrySchema, RawEntry, normalize_dn, parse_generalized_time
from collectors.ldap_modes import Cursor, EntryChange, EntryLookup
from collectors.ldap_session import LdapSession, class_filter, read_directory
from collectors.ldap_settings import LdapCollectorConfig


class SnapshotMode:
    """Compare the server's entries with the collector's copy every poll."""

    def __init__(self, config: LdapCollectorConfig, schema: EntrySchema) -> None:
        self.config = config
        self.schema = schema
        self.cursor: Cursor = {}

    def mark(self, session: LdapSession) -> None:
        """Nothing to mark: the snapshot about to be read is the position."""

    def poll(self, session: LdapSession, mirror: EntryLookup) -> Iterator[EntryChange]:
        listed = self._list(session)
        unchanged = {
            key for key, entry in listed.items() if (held := mirror.get(key)) is not None and self._same(held, entry)
        }
        changed = {key: entry for key, entry in listed.items() if key not in unchanged}
        if changed and self._has_stamps(listed):
            fresh = {key: session.read(entry.dn, self.schema.wanted()) for key, entry in changed.items()}
            changed = {key: entry for key, entry in fresh.items() if entry is not None}
        gone = [normalize_dn(dn) for dn in mirror.dns() if normalize_dn(dn) not in listed]
        by_id = {uid: key for key, entry in changed.items() if (uid := self._unique_id(entry))}
        moved: dict[str, str] = {}  # new key -> old key
        for old_key in gone:
            held = mirror.get(old_key)
            uid = self._unique_id(held) if held is not None else None
            if uid is not None and uid in by_id:
                moved[by_id[uid]] = old_key
        for key in sorted(changed, key=lambda k: (self.schema.kind_of(changed[k]) == "group", k)):
            entry = changed[key]
            actor = entry.first(self.schema.modifiers_name)
            changed_at = parse_generalized_time(entry.first(self.schema.modify_timestamp))
            yield EntryChange(moved.get(key, key), entry, actor, changed_at)
        for old_key in gone:
            if old_key not in moved.values():
                yield EntryChange(old_key, None)

    def _list(self, session: LdapSession) -> dict[str, RawEntry]:
        stamps = tuple(a for a in ("objectclass", self.schema.change_sequence, self.schema.modify_timestamp) if a)
        if not stamps[1:]:
            return read_directory(session, self.schema)
        attributes = (*stamps, self.schema.unique_id) if self.schema.unique_id else stamps
        listed: dict[str, RawEntry] = {}
        for base, classes in (
            (self.schema.user_base, self.schema.user_classes),
            (self.schema.group_base, self.schema.group_classes),
        ):
            for dn, attrs in session.search(base, class_filter(classes), attributes):
                entry = RawEntry(dn, attrs)
                if self.schema.kind_of(entry) is not None:
                    listed[normalize_dn(dn)] = entry
        return listed

    def _has_stamps(self, listed: dict[str, RawEntry]) -> bool:
        return any(self.schema.stamp(entry) for entry in listed.values())

    def _same(self, held: RawEntry, listed: RawEntry) -> bool:
        stamp = self.schema.stamp(listed)
        if stamp is None:
            return dict(held.attrs) == dict(listed.attrs) and held.dn == listed.dn
        return stamp == self.schema.stamp(held) and normalize_dn(held.dn) == normalize_dn(listed.dn)

    def _unique_id(self, entry: RawEntry) -> str | None:
        return entry.first(self.schema.unique_id)
