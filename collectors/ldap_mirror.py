"""The LDAP collector's copy of the directory, and the events each change to it publishes.

:class:`DirectoryMirror` holds the in-scope entries by normalized DN and the
principal state derived from each (the ``DirectoryUser``/``DirectoryGroup``
last published for it). Applying an :class:`EntryChange` re-derives only what
it touches: the entry itself and, when a principal appears, disappears or is
renamed, the groups that name it as a member. What differs is published with
the change's actor and time. Whether the server rewrites member DNs on a
rename or deletion (OpenLDAP's refint, 389's referint and AD do, without
logging it; Debian's default slapd does not) is not assumed: given a
``read`` function, ``apply`` re-reads every group that named the old DN and
takes from it what the server holds for that member — the old DN kept or
gone, the new one there or not — and nothing else, so the group's other
changes still arrive with their own authors. Without one (tests, tools) it
rewrites them when told the server keeps ``referential_integrity``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from collectors.directory_diff import PrincipalStates, diff
from collectors.ldap_entries import (
    EntrySchema,
    Kind,
    RawEntry,
    days_since_epoch,
    normalize_dn,
    parse_generalized_time,
)
from collectors.ldap_modes import EntryChange
from permwatch.events import DirectoryGroup, DirectoryUser, Event


class DirectoryMirror:
    """In-scope entries keyed by normalized DN, with reverse member indexes and derived principal states."""

    def __init__(
        self, schema: EntrySchema, *, source: str, referential_integrity: bool, today: Callable[[], int]
    ) -> None:
        self.schema = schema
        self.source = source
        self.referential_integrity = referential_integrity
        self._today = today
        self.day = today()
        self.entries: dict[str, RawEntry] = {}
        self.states: PrincipalStates = {}
        self._kinds: dict[str, Kind] = {}
        self._referrers: dict[str, set[str]] = {}  # member DN -> groups listing it
        self._uid_referrers: dict[str, set[str]] = {}  # memberUid value -> groups listing it

    def copy_empty(self) -> DirectoryMirror:
        return DirectoryMirror(
            self.schema, source=self.source, referential_integrity=self.referential_integrity, today=self._today
        )

    # ------------------------------------------------------------- lookups (EntryLookup)

    def get(self, dn: str) -> RawEntry | None:
        return self.entries.get(normalize_dn(dn))

    def dns(self) -> Iterator[str]:
        return iter(list(self.entries))

    def __len__(self) -> int:
        return len(self.entries)

    # ------------------------------------------------------------- changes

    def load(self, entries: Iterable[RawEntry]) -> None:
        """Take these entries as the published state, without publishing anything (a saved copy)."""
        self._clear()
        for entry in entries:
            if self.schema.kind_of(entry) is not None:
                self._put(normalize_dn(entry.dn), entry)
        self.states = {key: self._derive(key) for key in self.entries}

    def apply(self, change: EntryChange, read: Callable[[str], RawEntry | None] | None = None) -> list[Event]:
        """Apply one change and return the events it publishes (none when nothing a consumer sees changed).

        ``read`` (a DN -> the entry on the server now, or None) is asked for every group that named the
        entry when it is renamed or deleted, so that member is what the server holds: rewritten by
        refint, or left pointing at the old DN (naming nobody) without it.
        """
        old_key = normalize_dn(change.dn)
        old = self.entries.get(old_key)
        new = change.entry if change.entry is not None and self.schema.kind_of(change.entry) else None
        if old is None and new is None:
            return []
        new_key = normalize_dn(new.dn) if new is not None else None
        renamed = old is not None and new_key is not None and new_key != old_key
        affected = {old_key} | ({new_key} if new_key else set())
        if old is None or new is None or renamed or self._identity(old_key, old) != self._identity(new_key, new):
            affected |= self._groups_naming(old_key, old) | self._groups_naming(new_key, new)
        moved = old is not None and (new is None or renamed)
        referrers = sorted(self._referrers.get(old_key, set()) - {old_key}) if moved else []
        # read before changing anything, so a failed read leaves the mirror as it was
        reread = {group: read(self.entries[group].dn) for group in referrers} if read is not None else None
        if old is not None:
            self._remove(old_key)
        if new is not None and new_key is not None:
            if new_key in self.entries:  # renamed onto a DN we still hold: the server says it is free now
                self._remove(new_key)
            self._put(new_key, new)
        if reread is not None:
            for group, fresh in reread.items():
                if fresh is not None:  # a group gone meanwhile: its own change will say so
                    self._follow_member(group, old_key, new_key, fresh)
                    affected.add(group)
        elif self.referential_integrity and moved:
            for group in referrers:
                self._rewrite_member(group, old_key, new.dn if new is not None else None)
                affected.add(group)
        events = self._rederive(affected)
        return [self._annotate(e, change, old_key if renamed else None, new_key if renamed else None) for e in events]

    def replace_all(self, fresh: DirectoryMirror) -> list[Event]:
        """Take ``fresh`` (a snapshot, loaded) as the truth; publish only the differences (everything, at first).

        ``fresh`` is taken over, not copied: do not use it afterwards.
        """
        before_states, before_entries = self.states, self.entries
        self.entries, self.states, self._kinds = fresh.entries, fresh.states, fresh._kinds
        self._referrers, self._uid_referrers, self.day = fresh._referrers, fresh._uid_referrers, fresh.day
        events = diff(before_states, self.states, source=self.source, initial=not before_states)
        if not before_states:
            return events
        renames = self._renames(before_entries)
        return [self._annotate_resync(_disabled_change(e, before_states), renames) for e in events]

    def refresh_day(self) -> list[Event]:
        """Re-judge expiry dates when the date has changed (shadowExpire passes without any LDAP write)."""
        today = self._today()
        if today == self.day:
            return []
        self.day = today
        return self._rederive({key for key, kind in self._kinds.items() if kind == "user"})

    # ------------------------------------------------------------- derivation

    def _identity(self, key: str | None, entry: RawEntry | None) -> tuple[str, str] | None:
        if key is None or entry is None:
            return None
        kind = self.schema.kind_of(entry)
        return None if kind is None else (kind, self.schema.name_of(entry, kind))

    def _groups_naming(self, key: str | None, entry: RawEntry | None) -> set[str]:
        if key is None:
            return set()
        groups = set(self._referrers.get(key, ()))
        if entry is not None and self.schema.kind_of(entry) == "user":
            groups |= self._uid_referrers.get(self.schema.name_of(entry, "user").lower(), set())
        return groups

    def _rederive(self, keys: set[str]) -> list[Event]:
        before = {k: self.states[k] for k in keys if k in self.states}
        after = {k: self._derive(k) for k in keys if k in self.entries}
        for key in keys:
            if key in after:
                self.states[key] = after[key]
            else:
                self.states.pop(key, None)
        return [_disabled_change(e, before) for e in diff(before, after, source=self.source, initial=False)]

    def _derive(self, key: str) -> DirectoryUser | DirectoryGroup:
        entry, kind, schema = self.entries[key], self._kinds[key], self.schema
        name = schema.name_of(entry, kind)
        sid, primary_group_sid = schema.sids(entry, kind)
        if kind == "user":
            return DirectoryUser(
                name=name,
                dn=key,
                uid=schema.number(entry, schema.uid_number),
                primary_gid=schema.number(entry, schema.gid_number),
                disabled=schema.is_disabled(entry, self.day),
                sid=sid,
                primary_group_sid=primary_group_sid,
            )
        users: set[str] = set(entry.values(schema.member_uid))
        groups: set[str] = set()
        for attr in schema.member:
            for value in entry.values(attr):
                member_key = normalize_dn(value)
                member = self.entries.get(member_key)
                if member is None:
                    continue  # outside the bases, not a principal, or dangling
                member_kind = self._kinds[member_key]
                (users if member_kind == "user" else groups).add(schema.name_of(member, member_kind))
        return DirectoryGroup(
            name=name,
            dn=key,
            gid=schema.number(entry, schema.gid_number),
            member_users=tuple(sorted(users)),
            member_groups=tuple(sorted(groups)),
            sid=sid,
        )

    # ------------------------------------------------------------- annotation

    def _annotate(self, event: Event, change: EntryChange, renamed_from: str | None, renamed_to: str | None) -> Event:
        update: dict[str, Any] = {"actor": change.actor, "changed_at": change.changed_at}
        key = event.key
        if key == renamed_to:
            update["change"] = "renamed"
            if isinstance(event, DirectoryGroup):
                update |= {"added": (), "removed": ()}  # same members, new name
        elif key == renamed_from:
            update["change"] = "renamed"
        return event.model_copy(update=update)

    def _annotate_resync(self, event: Event, renames: dict[str, str]) -> Event:
        """A difference found by a resnapshot: who changed the entry last and when, where the server says."""
        if not isinstance(event, DirectoryUser | DirectoryGroup):
            return event
        update: dict[str, Any] = {}
        entry = None if event.deleted else self.entries.get(event.key)
        if entry is not None:
            update["actor"] = entry.first(self.schema.modifiers_name)
            update["changed_at"] = parse_generalized_time(entry.first(self.schema.modify_timestamp))
        if event.key in renames or event.key in renames.values():
            update["change"] = "renamed"
            if isinstance(event, DirectoryGroup) and not event.deleted:
                update |= {"added": (), "removed": ()}
        return event.model_copy(update=update)

    def _renames(self, before: dict[str, RawEntry]) -> dict[str, str]:
        """Old key -> new key for entries that kept their unique id but not their DN."""
        attr = self.schema.unique_id
        if not attr:
            return {}
        old_ids = {e.first(attr): k for k, e in before.items() if k not in self.entries and e.first(attr)}
        return {
            old_ids[uid]: key
            for key, entry in self.entries.items()
            if key not in before and (uid := entry.first(attr)) in old_ids
        }

    # ------------------------------------------------------------- indexes

    def _clear(self) -> None:
        self.entries, self.states, self._kinds = {}, {}, {}
        self._referrers, self._uid_referrers = {}, {}

    def _put(self, key: str, entry: RawEntry) -> None:
        kind = self.schema.kind_of(entry)
        assert kind is not None
        self.entries[key] = entry
        self._kinds[key] = kind
        if kind == "group":
            for member in self._member_keys(entry):
                self._referrers.setdefault(member, set()).add(key)
            for uid in entry.values(self.schema.member_uid):
                self._uid_referrers.setdefault(uid.lower(), set()).add(key)

    def _remove(self, key: str) -> None:
        entry = self.entries.pop(key)
        if self._kinds.pop(key) == "group":
            for member in self._member_keys(entry):
                _discard_ref(self._referrers, member, key)
            for uid in entry.values(self.schema.member_uid):
                _discard_ref(self._uid_referrers, uid.lower(), key)

    def _member_keys(self, entry: RawEntry) -> set[str]:
        return {normalize_dn(v) for attr in self.schema.member for v in entry.values(attr)}

    def _follow_member(self, group_key: str, old_member: str, new_member: str | None, fresh: RawEntry) -> None:
        """Take from the server's copy of a group only what it holds for one renamed or deleted member.

        The old DN stays where the server still lists it (no refint: it names nobody now) and goes where
        it does not; the new DN comes in where the server lists it. The group's other values and change
        stamp stay as held, so later writes to it are still followed one by one, with their authors.
        """
        group = self.entries[group_key]
        attrs = dict(group.attrs)
        for attr in self.schema.member:
            served = {normalize_dn(v): v for v in fresh.values(attr)}
            kept = tuple(v for v in attrs.get(attr, ()) if normalize_dn(v) != old_member or old_member in served)
            if new_member is not None and new_member in served and all(normalize_dn(v) != new_member for v in kept):
                kept += (served[new_member],)
            if kept:
                attrs[attr] = kept
            else:
                attrs.pop(attr, None)
        self._remove(group_key)
        self._put(group_key, RawEntry(group.dn, attrs))

    def _rewrite_member(self, group_key: str, old_member: str, new_member_dn: str | None) -> None:
        group = self.entries[group_key]
        attrs = dict(group.attrs)
        for attr in self.schema.member:
            values = attrs.get(attr)
            if not values:
                continue
            kept = tuple(v for v in values if normalize_dn(v) != old_member)
            if len(kept) != len(values) and new_member_dn is not None:
                kept += (new_member_dn,)
            attrs[attr] = kept
        self._remove(group_key)
        self._put(group_key, RawEntry(group.dn, attrs))


def _discard_ref(index: dict[str, set[str]], member: str, group: str) -> None:
    groups = index.get(member)
    if groups is not None:
        groups.discard(group)
        if not groups:
            del index[member]


def _disabled_change(event: Event, before: PrincipalStates) -> Event:
    """Name the change 'disabled' when it is the one that disabled an account."""
    if isinstance(event, DirectoryUser) and event.change == "modified" and event.disabled:
        was = before.get(event.key)
        if isinstance(was, DirectoryUser) and not was.disabled:
            return event.model_copy(update={"change": "disabled"})
    return event


def days_of(clock: Callable[[], datetime]) -> Callable[[], int]:
    """A ``today`` function (days since 1970) from a clock."""
    return lambda: days_since_epoch(clock())
