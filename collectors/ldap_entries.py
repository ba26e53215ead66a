"""Directory entries as the LDAP collector holds them, and the pure rules that read them.

An entry is its DN plus the few attributes the collector asked for, names
lower-cased and values as text. This module says which entries are users and
which are groups (base DN and object class), what a principal is called, when
an account counts as disabled, how DNs compare (:func:`normalize_dn`) and how
LDAP time stamps read. Nothing here talks to a server.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

from collectors.ldap_settings import LdapCollectorConfig

Kind = Literal["user", "group"]
Attributes = Mapping[str, tuple[str, ...]]

PERMANENT_LOCK = "000001010000Z"
"""ppolicy's pwdAccountLockedTime for an administrative lock; any other value is a lockout that expires."""
AD_ACCOUNTDISABLE = 0x2

_SPECIAL = ',+"\\<>;='


@dataclass(frozen=True)
class RawEntry:
    """One directory entry: its DN as the server spells it and the wanted attributes (lower-case names)."""

    dn: str
    attrs: Attributes

    def first(self, name: str) -> str | None:
        values = self.attrs.get(name) if name else None
        return values[0] if values else None

    def values(self, name: str) -> tuple[str, ...]:
        return self.attrs.get(name, ()) if name else ()


# ----------------------------------------------------------------------- DNs


def parse_dn(dn: str) -> list[list[tuple[str, str]]]:
    """Split a DN into RDNs of (type, unescaped value) pairs; raise ValueError when it is not a DN."""
    rdns: list[list[tuple[str, str]]] = []
    rdn: list[tuple[str, str]] = []
    i, n = 0, len(dn)
    if not dn.strip():
        return rdns
    while i < n:
        eq = dn.find("=", i)
        if eq < 0:
            raise ValueError(f"not a DN (no '=' after {dn[:i]!r}): {dn!r}")
        attr = dn[i:eq].strip()
        if not attr:
            raise ValueError(f"not a DN (empty attribute type): {dn!r}")
        value, i = _read_value(dn, eq + 1)
        rdn.append((attr, value))
        if i < n and dn[i] == "+":
            i += 1
            continue
        rdns.append(rdn)
        rdn = []
        if i < n:  # a ',' or ';' separator
            i += 1
    if rdn:
        rdns.append(rdn)
    return rdns


def _read_value(dn: str, i: int) -> tuple[str, int]:
    """One attribute value starting at ``i``: unescaped text and the index of the separator after it."""
    n = len(dn)
    while i < n and dn[i] == " ":
        i += 1
    out = bytearray()
    if i < n and dn[i] == '"':  # legacy quoted value (RFC 1779)
        end = dn.index('"', i + 1)
        out += dn[i + 1 : end].encode()
        i = end + 1
        while i < n and dn[i] not in ",;+":
            i += 1
        return out.decode("utf-8", "replace"), i
    trailing_escaped = 0
    while i < n and dn[i] not in ",;+":
        ch = dn[i]
        if ch == "\\" and i + 1 < n:
            pair = dn[i + 1 : i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                out.append(int(pair, 16))
                i += 3
            else:
                out += dn[i + 1].encode()
                i += 2
            trailing_escaped = len(out)
            continue
        out += ch.encode()
        i += 1
    text = out.decode("utf-8", "replace")
    # Unescaped trailing spaces are not part of the value; escaped ones are.
    keep = len(out[:trailing_escaped].decode("utf-8", "replace"))
    return text[:keep] + text[keep:].rstrip(" "), i


def _escape(value: str) -> str:
    out = "".join("\\" + ch if ch in _SPECIAL else ch for ch in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


@functools.lru_cache(maxsize=65_536)
def normalize_dn(dn: str) -> str:
    """The DN in one canonical spelling: types and values lower-case, no spaces around separators.

    Good enough to compare DNs of users and groups, whose naming attributes
    (uid, cn, ou, dc) match case-insensitively. A string that is not a DN is
    returned lower-cased, so it never equals a real entry's DN by accident.
    Cached: the same member DNs come up again and again.
    """
    if not any(ch in dn for ch in '\\"+#;'):  # the common case: plain "type=value,…"
        parts = [part.partition("=") for part in dn.split(",")]
        if all(eq for _, eq, _ in parts) and all(attr.strip() for attr, _, _ in parts):
            return ",".join(f"{a.strip().lower()}={_escape(v.strip(' ').lower())}" for a, _, v in parts)
    try:
        rdns = parse_dn(dn)
    except ValueError:
        return dn.strip().lower()
    return ",".join("+".join(sorted(f"{attr.lower()}={_escape(value.lower())}" for attr, value in rdn)) for rdn in rdns)


def is_within(dn_key: str, base_key: str) -> bool:
    """``dn_key`` is ``base_key`` or beneath it (both normalized)."""
    return dn_key == base_key or dn_key.endswith("," + base_key)


def parent_dn(dn: str) -> str:
    """The DN one level up, in the entry's own spelling."""
    rdns = parse_dn(dn)
    return ",".join("+".join(f"{a}={_escape(v)}" for a, v in rdn) for rdn in rdns[1:])


def rdn_of(dn: str) -> list[tuple[str, str]]:
    """The first RDN's (type, value) pairs, values unescaped and in their original case."""
    rdns = parse_dn(dn)
    return rdns[0] if rdns else []


# ---------------------------------------------------------------- time stamps


def parse_generalized_time(text: str | None) -> datetime | None:
    """An LDAP GeneralizedTime (``20240131120000Z``, ``…00.123456Z``, ``…00+0100``) as an aware UTC datetime."""
    if not text:
        return None
    main, zone = text.strip(), UTC
    try:
        if main[-1:] in ("Z", "z"):
            main = main[:-1]
        elif len(main) > 5 and main[-5] in "+-":
            sign = -1 if main[-5] == "-" else 1
            zone = timezone(sign * timedelta(hours=int(main[-4:-2]), minutes=int(main[-2:])))
            main = main[:-5]
        main, _, fraction = main.replace(",", ".").partition(".")
        stamp = datetime.strptime(main.ljust(14, "0")[:14], "%Y%m%d%H%M%S")
        micros = int((fraction + "000000")[:6]) if fraction else 0
    except ValueError:
        return None
    return stamp.replace(microsecond=micros, tzinfo=zone).astimezone(UTC)


def csn_time(csn: str | None) -> datetime | None:
    """The time part of an OpenLDAP change sequence number (``20240131120000.123456Z#000000#000#000000``)."""
    return parse_generalized_time(csn.split("#", 1)[0]) if csn else None


def days_since_epoch(moment: datetime) -> int:
    return (moment.astimezone(UTC).date() - datetime(1970, 1, 1, tzinfo=UTC).date()).days


# --------------------------------------------------------------------- schema


@dataclass(frozen=True)
class EntrySchema:
    """Where users and groups live and which (lower-cased) attribute holds what."""

    user_base: str
    group_base: str
    user_classes: frozenset[str]
    group_classes: frozenset[str]
    user_name: str
    group_name: str
    uid_number: str
    gid_number: str
    member: tuple[str, ...]
    member_uid: str
    locked_time: str
    shadow_expire: str
    account_control: str
    account_lock: str
    unique_id: str
    change_sequence: str
    modify_timestamp: str
    modifiers_name: str

    @classmethod
    def from_config(cls, config: LdapCollectorConfig) -> EntrySchema:
        a = config.attributes
        return cls(
            user_base=normalize_dn(config.user_base),
            group_base=normalize_dn(config.group_base),
            user_classes=frozenset(c.lower() for c in config.user_object_classes),
            group_classes=frozenset(c.lower() for c in config.group_object_classes),
            user_name=a.user_name.lower(),
            group_name=a.group_name.lower(),
            uid_number=a.uid_number.lower(),
            gid_number=a.gid_number.lower(),
            member=tuple(m.lower() for m in a.member if m),
            member_uid=a.member_uid.lower(),
            locked_time=a.locked_time.lower(),
            shadow_expire=a.shadow_expire.lower(),
            account_control=a.account_control.lower(),
            account_lock=a.account_lock.lower(),
            unique_id=a.unique_id.lower(),
            change_sequence=a.change_sequence.lower(),
            modify_timestamp=a.modify_timestamp.lower(),
            modifiers_name=a.modifiers_name.lower(),
        )

    def wanted(self) -> tuple[str, ...]:
        """Every attribute the collector reads (servers ignore names they do not know)."""
        names = [
            "objectclass",
            self.user_name,
            self.group_name,
            self.uid_number,
            self.gid_number,
            *self.member,
            self.member_uid,
            self.locked_time,
            self.shadow_expire,
            self.account_control,
            self.account_lock,
            self.unique_id,
            self.change_sequence,
            self.modify_timestamp,
            self.modifiers_name,
            OBJECT_SID,
            PRIMARY_GROUP_ID,
        ]
        return tuple(dict.fromkeys(n for n in names if n))

    def kind_of(self, entry: RawEntry) -> Kind | None:
        """The entry's kind ("user" or "group") when it is in scope, else None."""
        key = normalize_dn(entry.dn)
        classes = {c.lower() for c in entry.values("objectclass")}
        if is_within(key, self.user_base) and classes & self.user_classes:
            return "user"
        if is_within(key, self.group_base) and classes & self.group_classes:
            return "group"
        return None

    def name_of(self, entry: RawEntry, kind: Kind) -> str:
        """The principal's name: the naming attribute's value in the RDN, else its first value, else the RDN."""
        attr = self.user_name if kind == "user" else self.group_name
        rdn = rdn_of(entry.dn)
        for rdn_attr, value in rdn:
            if rdn_attr.lower() == attr and value:
                return value
        values = sorted(entry.values(attr))
        if values:
            return values[0]
        return rdn[0][1] if rdn else entry.dn

    def is_disabled(self, entry: RawEntry, today: int) -> bool:
        """Whether the account cannot log in: locked for good, expired, or flagged disabled.

        ``today`` is days since 1970 (shadowExpire's unit). A ppolicy lockout
        that expires by itself (any pwdAccountLockedTime but the permanent-lock
        value) does not count: the person can still read once it lapses, and a
        monitor should not stop counting them.
        """
        if any(v.strip() == PERMANENT_LOCK for v in entry.values(self.locked_time)):
            return True
        expire = _int(entry.first(self.shadow_expire))
        if expire is not None and 0 < expire <= today:
            return True
        control = _int(entry.first(self.account_control))
        if control is not None and control & AD_ACCOUNTDISABLE:
            return True
        return any(v.strip().lower() == "true" for v in entry.values(self.account_lock))

    def number(self, entry: RawEntry, attr: str) -> int | None:
        return _int(entry.first(attr))

    def sids(self, entry: RawEntry, kind: Kind) -> tuple[str | None, str | None]:
        """The entry's SID and (a user's) primary group's SID: its domain's SID and ``primaryGroupID``, so 513 is
        Domain Users, whose members no group lists as ``member``. (None, None) where the server has no SIDs."""
        sid = entry.first(OBJECT_SID)
        if sid is None or not sid.startswith("S-1-"):
            return None, None
        rid = _int(entry.first(PRIMARY_GROUP_ID))
        if kind == "user" and rid is not None and rid >= 0 and sid.count("-") > 3:
            return sid, f"{sid.rsplit('-', 1)[0]}-{rid}"
        return sid, None

    def stamp(self, entry: RawEntry) -> str | None:
        """What changes whenever the entry changes: its CSN, else its modify time."""
        return entry.first(self.change_sequence) or entry.first(self.modify_timestamp)


OBJECT_SID = "objectsid"
PRIMARY_GROUP_ID = "primarygroupid"
"""Active Directory's (and Samba AD's) SID attributes, always asked for: other servers ignore the names."""


def sid_text(value: bytes) -> str | None:
    """A binary SID (``objectSid``, MS-DTYP 2.4.2.2) as ``S-1-…``; None when the bytes are not one."""
    if len(value) < 8 or value[0] != 1 or len(value) != 8 + 4 * value[1] or value[1] > 15:
        return None
    authority = int.from_bytes(value[2:8], "big")
    subs = [int.from_bytes(value[i : i + 4], "little") for i in range(8, len(value), 4)]
    return "-".join(["S", "1", str(authority) if authority < 2**32 else f"0x{authority:012X}", *map(str, subs)])


def attribute_text(name: str, value: bytes | str) -> str:
    """An attribute value as text: UTF-8 (undecodable bytes replaced), an ``objectSid`` as ``S-1-…``."""
    if not isinstance(value, bytes):
        return str(value)
    if name.lower() == OBJECT_SID:
        sid = sid_text(value)
        if sid is not None:
            return sid
    return value.decode("utf-8", "replace")


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None
