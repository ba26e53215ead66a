"""The "accesslog" change mode: follow OpenLDAP's accesslog overlay (slapo-accesslog).

Every successful write lands in the log database (``cn=accesslog``) as one
entry: ``reqStart`` (its id and order), ``reqType``, ``reqDN``,
``reqAuthzID`` (who), ``reqMod`` lines (what: ``attr:+ value``, ``attr:-``,
``attr:= value``) and, for renames, ``reqNewRDN``/``reqDeleteOldRDN``/
``reqNewSuperior``. The mode polls for entries from its cursor on, replays
each onto the collector's copy of the entry and hands back the result.

Three things make that exact. Concurrent writes can reach the log out of
``reqStart`` order, so each poll re-reads a short window before the cursor and
skips what it already handled (the ids are kept in the cursor). A replay of a
change the copy already holds (after a snapshot, or a crash before the state
was saved) is skipped by comparing the log entry's ``entryCSN`` with the
copy's. And when the log no longer holds the cursor's own entry, it was
purged past it: :class:`ChangeGap` tells the collector to resnapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, cast

from ldap3 import LEVEL

from collectors.ldap_entries import (
    EntrySchema,
    RawEntry,
    csn_time,
    is_within,
    normalize_dn,
    parent_dn,
    parse_generalized_time,
    rdn_of,
)
from collectors.ldap_modes import ChangeGap, Cursor, EntryChange, EntryLookup
from collectors.ldap_session import LdapSession
from collectors.ldap_settings import LdapCollectorConfig

log = logging.getLogger("permwatch.collectors.ldap")

REORDER_WINDOW = timedelta(seconds=5)
"""How far before the cursor each poll looks again for writes that were logged late."""

LOG_ATTRIBUTES = (
    "reqStart",
    "reqType",
    "reqDN",
    "reqAuthzID",
    "reqMod",
    "reqNewRDN",
    "reqDeleteOldRDN",
    "reqNewSuperior",
    "reqNewDN",
    "entryCSN",
)

Op = Literal["+", "-", "=", "#"]


@dataclass(frozen=True)
class Modification:
    """One modification of one attribute: add, delete (no values: all), replace or increment."""

    attr: str
    op: Op
    values: tuple[str, ...] = ()


def parse_req_mods(lines: tuple[str, ...]) -> list[Modification]:
    """``reqMod`` values (``member:+ cn=x,…``, ``description:-``) as modifications, in order.

    Consecutive lines for the same attribute and operation are one
    modification with several values, which is how the overlay writes a
    multi-valued add, delete or replace. Lines that do not parse are skipped.
    """
    mods: list[Modification] = []
    for line in lines:
        colon = line.find(":")
        if colon <= 0 or colon + 1 >= len(line) or line[colon + 1] not in "+-=#":
            continue
        attr, op = line[:colon].lower(), cast(Op, line[colon + 1])
        rest = line[colon + 2 :]
        value = rest[1:] if rest.startswith(" ") else None
        last = mods[-1] if mods else None
        if last is not None and last.attr == attr and last.op == op and value is not None and last.values:
            mods[-1] = Modification(attr, last.op, (*last.values, value))
        else:
            mods.append(Modification(attr, op, () if value is None else (value,)))
    return mods


def apply_modifications(
    attrs: Mapping[str, tuple[str, ...]], mods: list[Modification], wanted: frozenset[str], dn_valued: frozenset[str]
) -> dict[str, tuple[str, ...]]:
    """The attributes after ``mods`` (only ``wanted`` ones are kept); values of ``dn_valued`` compare as DNs."""
    out = dict(attrs)
    for mod in mods:
        if mod.attr not in wanted:
            continue
        same = normalize_dn if mod.attr in dn_valued else str.lower
        current = out.get(mod.attr, ())
        if mod.op == "+":
            seen = {same(v) for v in current}
            added = [v for v in mod.values if same(v) not in seen]
            current = (*current, *dict.fromkeys(added))
        elif mod.op == "-":
            gone = {same(v) for v in mod.values}
            current = tuple(v for v in current if same(v) not in gone) if mod.values else ()
        elif mod.op == "=":
            current = tuple(mod.values)
        elif mod.op == "#" and current and mod.values:
            try:
                current = (str(int(current[0]) + int(mod.values[0])),)
            except ValueError:
                log.warning("accesslog: cannot increment %s (%r by %r)", mod.attr, current[0], mod.values[0])
        if current:
            out[mod.attr] = current
        else:
            out.pop(mod.attr, None)
    return out


def renamed_entry(entry: RawEntry, new_dn: str, new_rdn: str, delete_old_rdn: bool, wanted: frozenset[str]) -> RawEntry:
    """The entry after a modrdn: the old RDN's values dropped (when asked), the new RDN's added."""
    attrs = dict(entry.attrs)
    if delete_old_rdn:
        for attr, value in rdn_of(entry.dn):
            name = attr.lower()
            kept = tuple(v for v in attrs.get(name, ()) if v.lower() != value.lower())
            if kept:
                attrs[name] = kept
            else:
                attrs.pop(name, None)
    for attr, value in rdn_of(new_rdn):
        name = attr.lower()
        current = attrs.get(name, ())
        if name in wanted and value.lower() not in {v.lower() for v in current}:
            attrs[name] = (*current, value)
    return RawEntry(new_dn, attrs)


def actor_of(authz_id: str | None) -> str | None:
    """The DN that made a change, from ``reqAuthzID`` (``dn:uid=…`` or a bare DN); None when anonymous."""
    if not authz_id:
        return None
    text = authz_id.strip()
    if text.lower().startswith("dn:"):
        text = text[3:]
    return text or None


def _shift(req_start: str, delta: timedelta) -> str:
    moment = parse_generalized_time(req_start)
    if moment is None:
        return req_start
    return (moment + delta).astimezone(UTC).strftime("%Y%m%d%H%M%S.000000Z")


class AccesslogMode:
    """Poll ``config.accesslog_base`` from ``cursor`` = {"last": reqStart, "recent": [reqStart, …]}."""

    def __init__(self, config: LdapCollectorConfig, schema: EntrySchema) -> None:
        self.config = config
        self.schema = schema
        self.cursor: Cursor = {"last": None, "recent": []}
        self._wanted = frozenset(schema.wanted())
        self._dn_valued = frozenset(schema.member)

    def mark(self, session: LdapSession) -> None:
        last = self.cursor.get("last")
        search = _log_filter(last)
        starts = sorted(
            attrs["reqstart"][0] for attrs in self._search(session, search, ("reqStart",)) if attrs.get("reqstart")
        )
        if not starts:  # an empty log: follow it from its first entry
            self.cursor = {"last": None, "recent": []}
            return
        head = starts[-1]
        floor = _shift(head, -REORDER_WINDOW)
        self.cursor = {"last": head, "recent": [s for s in starts if s >= floor]}

    def poll(self, session: LdapSession, mirror: EntryLookup) -> Iterator[EntryChange]:
        last: str | None = self.cursor.get("last")
        recent = set(self.cursor.get("recent", []))
        search = _log_filter(_shift(last, -REORDER_WINDOW) if last else None)
        records = sorted(
            (attrs for attrs in self._search(session, search, LOG_ATTRIBUTES) if attrs.get("reqstart")),
            key=lambda attrs: attrs["reqstart"][0],
        )
        if last and not any(attrs["reqstart"][0] == last for attrs in records):
            raise ChangeGap(f"{self.config.accesslog_base} no longer holds reqStart={last}")
        for attrs in records:
            start = attrs["reqstart"][0]
            if start in recent:
                continue
            change = self._change_for(attrs, session, mirror)
            if change is not None:
                yield change
            recent.add(start)
            last = max(last or start, start)
            floor = _shift(last, -REORDER_WINDOW)
            self.cursor = {"last": last, "recent": sorted(s for s in recent if s >= floor)}

    def _search(
        self, session: LdapSession, search: str, attributes: tuple[str, ...]
    ) -> Iterator[dict[str, tuple[str, ...]]]:
        for _, attrs in session.search(self.config.accesslog_base, search, attributes, scope=LEVEL):
            yield attrs

    def _change_for(
        self, record: Mapping[str, tuple[str, ...]], session: LdapSession, mirror: EntryLookup
    ) -> EntryChange | None:
        dn = _first(record, "reqdn")
        kind = (_first(record, "reqtype") or "").lower()
        if dn is None or not self._in_bases(dn, record):
            return None
        csn = _first(record, "entrycsn")
        actor = actor_of(_first(record, "reqauthzid"))
        at = csn_time(csn) or parse_generalized_time(_first(record, "reqstart"))
        current = mirror.get(dn)
        if kind == "delete":
            if current is None or _newer(self._csn(current), csn):
                return None
            return EntryChange(dn, None, actor, at)
        if kind == "modrdn":
            return self._rename(record, dn, current, csn, actor, at, session, mirror)
        if current is not None and _not_older(self._csn(current), csn):
            return None  # the copy already holds this change
        mods = parse_req_mods(record.get("reqmod", ()))
        if kind == "add":
            return EntryChange(
                dn, RawEntry(dn, apply_modifications({}, mods, self._wanted, self._dn_valued)), actor, at
            )
        if kind != "modify":
            return None
        if current is None:
            # Not in our copy: it may just have come into scope (an objectClass added). Read what it is now.
            return EntryChange(dn, session.read(dn, self.schema.wanted()), actor, at)
        attrs = apply_modifications(current.attrs, mods, self._wanted, self._dn_valued)
        return EntryChange(dn, RawEntry(current.dn, attrs), actor, at)

    def _rename(
        self,
        record: Mapping[str, tuple[str, ...]],
        dn: str,
        current: RawEntry | None,
        csn: str | None,
        actor: str | None,
        at: datetime | None,
        session: LdapSession,
        mirror: EntryLookup,
    ) -> EntryChange | None:
        new_rdn = _first(record, "reqnewrdn") or ""
        superior = _first(record, "reqnewsuperior")
        new_dn = _first(record, "reqnewdn") or f"{new_rdn},{superior or parent_dn(dn)}"
        if current is None:
            moved = mirror.get(new_dn)
            if moved is not None and _not_older(self._csn(moved), csn):
                return None
            # Moved in from outside the bases (or we never had it): read what it is now.
            return EntryChange(new_dn, session.read(new_dn, self.schema.wanted()), actor, at)
        if _not_older(self._csn(current), csn):
            return None
        delete_old = (_first(record, "reqdeleteoldrdn") or "").upper() == "TRUE"
        entry = renamed_entry(current, new_dn, new_rdn, delete_old, self._wanted)
        mods = parse_req_mods(record.get("reqmod", ()))
        entry = RawEntry(entry.dn, apply_modifications(entry.attrs, mods, self._wanted, self._dn_valued))
        return EntryChange(dn, entry, actor, at)

    def _csn(self, entry: RawEntry) -> str | None:
        return entry.first(self.schema.change_sequence)

    def _in_bases(self, dn: str, record: Mapping[str, tuple[str, ...]]) -> bool:
        keys = [normalize_dn(dn)]
        if new_dn := _first(record, "reqnewdn"):
            keys.append(normalize_dn(new_dn))
        bases = (self.schema.user_base, self.schema.group_base)
        return any(is_within(key, base) for key in keys for base in bases)


def _log_filter(since: str | None) -> str:
    """Successful writes, from ``since`` (a reqStart) on when given."""
    start = f"(reqStart>={since})" if since else ""
    return f"(&(objectClass=auditWriteObject)(reqResult=0){start})"


def _first(record: Mapping[str, tuple[str, ...]], name: str) -> str | None:
    values = record.get(name)
    return values[0] if values else None


def _not_older(held: str | None, change: str | None) -> bool:
    """The copy's stamp is at or past the change's: it already holds it."""
    return held is not None and change is not None and held >= change


def _newer(held: str | None, change: str | None) -> bool:
    return held is not None and change is not None and held > change
