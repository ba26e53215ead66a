"""Group membership deltas come back from DirSync on a real Samba AD DC.

How ldap3 (2.9) does DirSync: ``sync = conn.extend.microsoft.dir_sync(sync_base=<the
domain's base DN>, sync_filter="(objectClass=group)", attributes=["member", "cn",
"gidNumber"], incremental_values=True, cookie=<bytes or None>)``; call
``sync.loop()`` while ``sync.more_results`` is true, each call returning a list of
entries and updating ``sync.cookie`` (opaque ``bytes``, ~100 bytes here) to store
and pass back later, also on a new connection. ldap3 always adds the Extended DN
control, so every DN, the entry's and each ``member`` value, comes as
``<GUID=...>;<SID=...>;CN=...`` (``<SID=...>`` only for security principals).

With ``incremental_values=True`` a changed linked attribute is sent as ranged
values: ``member;range=1-1`` lists values present or added, ``member;range=0-0``
values removed; plain ``member`` is never sent. The initial sync already uses
this shape (every current member as ``range=1-1``). After adding bob to and
removing alice from a group, resuming from the saved cookie returns exactly::

    {
        "type": "searchResEntry",
        "dn": "<GUID=0f3d...>;<SID=S-1-5-21-...-1104>;CN=eng-<tag>,OU=t<tag>,DC=example,DC=org",
        "raw_dn": b"<GUID=...>;<SID=...>;CN=eng-<tag>,OU=t<tag>,DC=example,DC=org",
        "raw_attributes": {                      # CaseInsensitiveDict: attribute -> list[bytes]
            "member;range=1-1": [b"<GUID=...>;<SID=...-1103>;CN=bob-<tag>,OU=t<tag>,DC=example,DC=org"],
            "member;range=0-0": [b"<GUID=...>;<SID=...-1102>;CN=alice-<tag>,OU=t<tag>,DC=example,DC=org"],
            "objectGUID": [b"<16 bytes>"],       # always sent
            "instanceType": [b"4"],              # always sent
            "member": [], "cn": [], "gidNumber": [],  # requested but unchanged: ldap3 fills in []
        },
        "attributes": {...},                     # same keys decoded with the schema: objectGUID as
                                                 # "{0f3d...}", instanceType and gidNumber as int
    }

An unchanged attribute is left out (ldap3 then shows ``[]`` for it), and Samba
does not send ``cn`` even in the initial sync (the group's name is in the DN).
DirSync also needs its base to be the naming context's root, so other tests'
groups can show up too: match entries on their DN.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE, Connection

from tests.integration.servers.samba_ad import SambaAD

# Until conftest imports the fixtures itself.

pytestmark = [pytest.mark.integration, pytest.mark.directory_servers]

SYNC_ATTRIBUTES = ["member", "cn", "gidNumber"]
NORMAL_ACCOUNT_DISABLED = 0x0200 | 0x0002  # a user without a password must be disabled


def plain_dn(extended_dn: bytes | str) -> str:
    """``CN=...`` from ldap3's Extended DN form ``<GUID=...>;<SID=...>;CN=...``."""
    text = extended_dn.decode() if isinstance(extended_dn, bytes) else extended_dn
    return text.rsplit(">;", 1)[-1]


def full_dir_sync(conn: Connection, base_dn: str, cookie: bytes | None) -> tuple[list[dict[str, Any]], bytes]:
    """Every entry DirSync returns from ``cookie`` on, and the cookie to resume from."""
    sync = conn.extend.microsoft.dir_sync(
        sync_base=base_dn,
        sync_filter="(objectClass=group)",
        attributes=SYNC_ATTRIBUTES,
        incremental_values=True,
        cookie=cookie,
    )
    entries: list[dict[str, Any]] = []
    while sync.more_results:
        entries += [entry for entry in sync.loop() if entry["type"] == "searchResEntry"]
    assert isinstance(sync.cookie, bytes) and sync.cookie
    return entries, sync.cookie


def entry_for(entries: list[dict[str, Any]], dn: str) -> dict[str, Any]:
    matches = [entry for entry in entries if plain_dn(entry["dn"]).lower() == dn.lower()]
    assert len(matches) == 1, f"expected one DirSync entry for {dn}, got {[e['dn'] for e in entries]}"
    return matches[0]


def test_membership_delta_arrives_as_ranged_member_values(samba_ad: SambaAD) -> None:
    tag = uuid.uuid4().hex[:8]
    ou = f"OU=t{tag},{samba_ad.base_dn}"
    alice, bob = f"CN=alice-{tag},{ou}", f"CN=bob-{tag},{ou}"
    eng, ops = f"CN=eng-{tag},{ou}", f"CN=ops-{tag},{ou}"

    def user(name: str) -> tuple[str, list[str], dict[str, Any]]:
        attributes = {"sAMAccountName": name, "userAccountControl": NORMAL_ACCOUNT_DISABLED}
        return f"CN={name},{ou}", ["user"], attributes

    samba_ad.add_entries(
        [
            (ou, ["organizationalUnit"], {}),
            user(f"alice-{tag}"),
            user(f"bob-{tag}"),
            (eng, ["group"], {"sAMAccountName": f"eng-{tag}", "gidNumber": 70001, "member": [alice]}),
            (ops, ["group"], {"sAMAccountName": f"ops-{tag}", "gidNumber": 70002, "member": [bob]}),
        ]
    )

    sync_conn = samba_ad.connect()
    try:
        initial, cookie = full_dir_sync(sync_conn, samba_ad.base_dn, None)
    finally:
        sync_conn.unbind()
    first = entry_for(initial, eng)["raw_attributes"]
    assert [plain_dn(value) for value in first["member;range=1-1"]] == [alice]
    assert first["gidNumber"] == [b"70001"]
    assert first["cn"] == []  # not sent by Samba; ldap3 fills in requested attributes

    admin = samba_ad.connect()
    try:
        assert admin.modify(eng, {"member": [(MODIFY_ADD, [bob])]}), admin.result
        assert admin.modify(eng, {"member": [(MODIFY_DELETE, [alice])]}), admin.result
    finally:
        admin.unbind()

    resumed_conn = samba_ad.connect()  # a cookie is not tied to the connection that got it
    try:
        delta, next_cookie = full_dir_sync(resumed_conn, samba_ad.base_dn, cookie)
    finally:
        resumed_conn.unbind()

    changed = entry_for(delta, eng)
    assert all(plain_dn(entry["dn"]).lower() != ops.lower() for entry in delta)  # ops did not change
    assert changed["type"] == "searchResEntry"
    assert changed["dn"].startswith("<GUID=")
    raw = changed["raw_attributes"]
    assert [plain_dn(value) for value in raw["member;range=1-1"]] == [bob]
    assert [plain_dn(value) for value in raw["member;range=0-0"]] == [alice]
    assert raw["member;range=1-1"][0].startswith(b"<GUID=")
    assert b";<SID=S-1-5-21-" in raw["member;range=1-1"][0]
    assert raw["member"] == [] and raw["gidNumber"] == [] and raw["cn"] == []
    assert len(raw["objectGUID"][0]) == 16
    assert raw["instanceType"] == [b"4"]
    assert next_cookie != cookie

    again_conn = samba_ad.connect()
    try:
        quiet, _ = full_dir_sync(again_conn, samba_ad.base_dn, next_cookie)
    finally:
        again_conn.unbind()
    assert all(plain_dn(entry["dn"]).lower() != eng.lower() for entry in quiet)
