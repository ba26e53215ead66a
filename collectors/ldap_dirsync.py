"""The "dirsync" change mode: follow Active Directory (or Samba AD) through the DirSync control.

Each poll asks for the users and groups changed since the cookie saved in the
cursor; the server answers with only what changed: single-valued and ordinary
attributes whole, ``member`` as incremental values (``member;range=1-1``
added, ``member;range=0-0`` removed), an attribute cleared as one without
values, a deleted object as its tombstone (``isDeleted``). Every DN comes in
extended form (``<GUID=…>;<SID=…>;CN=…``); the plain DN is kept. The mode
merges each answer into the collector's copy of the entry and hands back the
result, so a restart resumes from the cookie instead of resnapshotting.

DirSync names no old DN for a rename and a tombstone no longer has its DN, so
the cursor also maps each in-scope object's GUID to the DN the collector holds
it under (built by ``mark``'s full pass, kept up to date by every poll). It
says nothing about who made a change nor when (``whenChanged`` is not
replicated): actor and time are None. A cookie the server refuses is a
:class:`ChangeGap`.

Settings that fit AD: ``user_object_classes = ["user"]`` (computer objects are
users too: keep them out of the user base), ``group_object_classes =
["group"]``, ``[ldap.attributes]`` ``user_name``/``group_name`` =
``"sAMAccountName"``, ``unique_id = "objectGUID"``, ``modify_timestamp =
"whenChanged"``, ``modifiers_name = ""``, ``change_sequence = ""``;
``uidNumber``/``gidNumber`` need the RFC 2307 schema. The bind account needs
the "Replicating Directory Changes" right, and both bases must be in one
naming context (DirSync reads from its root).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from ldap3 import BASE
from ldap3.core.exceptions import (
    LDAPCommunicationError,
    LDAPProtocolErrorResult,
    LDAPUnavailableCriticalExtensionResult,
    LDAPUnwillingToPerformResult,
)
from ldap3.utils.dn import escape_rdn

from collectors.ldap_entries import EntrySchema, RawEntry, attribute_text, is_within, normalize_dn, rdn_of
from collectors.ldap_modes import ChangeGap, Cursor, EntryChange, EntryLookup
from collectors.ldap_session import LdapSession, class_filter
from collectors.ldap_settings import LdapCollectorConfig
from permwatch.config import ConfigError

log = logging.getLogger("permwatch.collectors.ldap")

REFUSED_COOKIE = (LDAPUnavailableCriticalExtensionResult, LDAPUnwillingToPerformResult, LDAPProtocolErrorResult)
"""How servers refuse a cookie they cannot continue from (Samba: unavailableCriticalExtension)."""

EXTRA_ATTRIBUTES = ("isDeleted", "lastKnownParent")
"""Asked for besides the schema's attributes, to recognise tombstones; never kept in an entry."""

RawAttributes = Mapping[str, list[bytes] | None]


def split_extended_dn(text: str) -> tuple[str | None, str]:
    """``<GUID=g>;<SID=s>;CN=x,…`` as (g lower-cased, ``CN=x,…``); a plain DN as (None, itself)."""
    guid = None
    rest = text
    while rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            break
        part = rest[1:end]
        if part[:5].upper() == "GUID=":
            guid = part[5:].lower()
        rest = rest[end + 1 :].removeprefix(";")
    return guid, rest


def plain_dn(text: str) -> str:
    return split_extended_dn(text)[1]


def merge_delta(
    attrs: Mapping[str, tuple[str, ...]], delta: RawAttributes, wanted: frozenset[str], dn_valued: frozenset[str]
) -> dict[str, tuple[str, ...]]:
    """The attributes after a DirSync answer: whole values replaced, ranged values added or removed."""
    out = dict(attrs)
    for name, raw_values in delta.items():
        attr, _, option = name.lower().partition(";")
        if attr not in wanted:
            continue
        values = tuple(_text(v, dn_valued=attr in dn_valued, name=attr) for v in raw_values or ())
        same = normalize_dn if attr in dn_valued else str.lower
        current = out.get(attr, ())
        if option == "range=1-1":
            held = {same(v) for v in current}
            current = (*current, *dict.fromkeys(v for v in values if same(v) not in held))
        elif option == "range=0-0":
            gone = {same(v) for v in values}
            current = tuple(v for v in current if same(v) not in gone)
        elif option:
            log.debug("dirsync: ignoring %s (an unexpected attribute option)", name)
            continue
        else:
            current = values
        if current:
            out[attr] = current
        else:
            out.pop(attr, None)
    return out


class DirSyncMode:
    """Follow AD with DirSync; cursor = {"cookie": base64 of the server's cookie, "ids": {guid: held DN key}}."""

    def __init__(self, config: LdapCollectorConfig, schema: EntrySchema) -> None:
        self.config = config
        self.schema = schema
        self.cursor: Cursor = {"cookie": None, "ids": {}}
        self._wanted = frozenset(schema.wanted())
        self._dn_valued = frozenset(schema.member)
        self._filter = class_filter(schema.user_classes | schema.group_classes)
        self._attributes = [*schema.wanted(), *EXTRA_ATTRIBUTES]
        self._sync_base: str | None = None

    def mark(self, session: LdapSession) -> None:
        """A full pass from no cookie: the cookie for the present, and the GUID of every object in scope."""
        seen: dict[str, tuple[str, set[str]]] = {}  # guid -> (dn, object classes); an object may come twice
        cookie = None
        for page, page_cookie in self._pages(session, None):
            cookie = page_cookie
            for item in page:
                guid, dn = split_extended_dn(item["dn"])
                raw = _lower(item.get("raw_attributes") or {})
                if guid is None or _is_deleted(raw):
                    continue
                classes = {v.decode("utf-8", "replace").lower() for v in raw.get("objectclass") or ()}
                seen[guid] = (dn, classes | seen.get(guid, ("", set()))[1])
        ids = {
            guid: normalize_dn(dn)
            for guid, (dn, classes) in seen.items()
            if self.schema.kind_of(RawEntry(dn, {"objectclass": tuple(classes)})) is not None
        }
        self.cursor = {"cookie": _encode(cookie), "ids": ids}
        log.info("ldap %s: DirSync cookie taken; %d objects in scope", self.config.collector_id, len(ids))

    def poll(self, session: LdapSession, mirror: EntryLookup) -> Iterator[EntryChange]:
        cookie = self.cursor.get("cookie")
        if not cookie:
            raise ChangeGap("no DirSync cookie to continue from")
        ids: dict[str, str] = self.cursor.setdefault("ids", {})
        for page, next_cookie in self._pages(session, base64.b64decode(cookie)):
            for item in page:
                guid, dn = split_extended_dn(item["dn"])
                raw = _lower(item.get("raw_attributes") or {})
                change, held_as = self._change_for(guid, dn, raw, session, mirror, ids)
                if change is not None:
                    yield change
                if guid is not None:  # only once the change is applied: a replay must find the old DN
                    if held_as:
                        ids[guid] = held_as
                    else:
                        ids.pop(guid, None)
            self.cursor = {"cookie": _encode(next_cookie), "ids": ids}

    # ------------------------------------------------------------- internals

    def _pages(self, session: LdapSession, cookie: bytes | None) -> Iterator[tuple[list[dict[str, Any]], bytes]]:
        """Each page of the DirSync answer from ``cookie`` on, with the cookie that follows it."""
        connection = _connection(session)
        sync = connection.extend.microsoft.dir_sync(
            sync_base=self._base(session),
            sync_filter=self._filter,
            attributes=self._attributes,
            cookie=cookie,
            incremental_values=True,
        )
        while sync.more_results:
            try:
                page = sync.loop()
            except REFUSED_COOKIE as exc:
                if cookie is None:
                    raise  # no cookie to blame: DirSync itself is refused (rights, or not an AD server)
                raise ChangeGap(f"the server refused the DirSync cookie ({exc.description})") from None
            yield [item for item in page if item.get("type") == "searchResEntry"], sync.cookie

    def _base(self, session: LdapSession) -> str:
        """The naming context holding both bases, read from the root DSE once: DirSync starts at its root."""
        if self._sync_base is None:
            connection = _connection(session)
            connection.search("", "(objectClass=*)", BASE, attributes=["namingContexts"])
            contexts = [
                value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                for item in connection.response or ()
                for value in (item.get("raw_attributes") or {}).get("namingContexts", ())
            ]
            holding = [
                nc
                for nc in contexts
                if is_within(self.schema.user_base, normalize_dn(nc))
                and is_within(self.schema.group_base, normalize_dn(nc))
            ]
            if not holding:
                raise ConfigError(
                    f"ldap collector {self.config.collector_id!r}: keys 'user_base'/'group_base': "
                    f"not both in one naming context of {session.where} ({', '.join(contexts) or 'none listed'})"
                )
            self._sync_base = max(holding, key=len)
        return self._sync_base

    def _change_for(
        self,
        guid: str | None,
        dn: str,
        raw: RawAttributes,
        session: LdapSession,
        mirror: EntryLookup,
        ids: Mapping[str, str],
    ) -> tuple[EntryChange | None, str | None]:
        """The change one answer makes, and the DN key the object is then held under (None: not held)."""
        held_key = ids.get(guid) if guid is not None else None
        if _is_deleted(raw):
            held = mirror.get(held_key) if held_key else None
            held = held or _tombstone_home(dn, raw, mirror)
            return (EntryChange(held.dn, None) if held is not None else None), None
        held = (mirror.get(held_key) if held_key else None) or mirror.get(dn)
        if held is not None:
            entry: RawEntry | None = RawEntry(dn, merge_delta(held.attrs, raw, self._wanted, self._dn_valued))
        elif "objectclass" in raw:  # a new object comes whole
            entry = RawEntry(dn, merge_delta({}, raw, self._wanted, self._dn_valued))
        else:  # moved in from outside the bases (only what changed came): read all of it
            entry = session.read(dn, self.schema.wanted())
        in_scope = entry is not None and self.schema.kind_of(entry) is not None
        if held is None and not in_scope:
            return None, None
        return EntryChange(held.dn if held is not None else dn, entry), normalize_dn(dn) if in_scope else None


def _connection(session: LdapSession) -> Any:
    """The session's ldap3 connection: DirSync needs controls that LdapSession's searches do not pass."""
    connection = session._connection
    if connection is None:
        raise LDAPCommunicationError("not connected")
    return connection


def _tombstone_home(dn: str, raw: RawAttributes, mirror: EntryLookup) -> RawEntry | None:
    """The held entry a tombstone was: its old RDN (before the "\\nDEL:" mark) under ``lastKnownParent``."""
    parents = raw.get("lastknownparent") or ()
    rdn = rdn_of(dn)
    if not parents or not rdn:
        return None
    attr, value = rdn[0]
    parent = plain_dn(parents[0].decode("utf-8", "replace"))
    name = value.split("\n", 1)[0]
    return mirror.get(f"{attr}={escape_rdn(name)},{parent}")


def _is_deleted(raw: RawAttributes) -> bool:
    return any(v.upper() == b"TRUE" for v in raw.get("isdeleted") or ())


def _lower(raw: Mapping[str, Any]) -> dict[str, list[bytes] | None]:
    return {name.lower(): values for name, values in raw.items()}


def _text(value: bytes, *, dn_valued: bool, name: str = "") -> str:
    """Decoded exactly as the session decodes snapshot entries, so both compare; DNs without their GUID/SID."""
    text = attribute_text(name, value)
    return plain_dn(text) if dn_valued else text


def _encode(cookie: bytes | None) -> str | None:
    return base64.b64encode(cookie).decode("ascii") if cookie else None
