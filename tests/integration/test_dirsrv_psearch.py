"""Group changes reach an ldap3 persistent search on a real 389 Directory Server.

What ldap3 (2.9) hands out: with a connection using ``client_strategy=ASYNC_STREAM``,
``conn.extend.standard.persistent_search(..., streaming=False, changes_only=True,
notifications=True)`` queues one plain dict per change, read with
``ps.next(block=True, timeout=...)`` (``None`` on timeout). With ``streaming=True``
(ldap3's default) nothing is queued: entries are written as LDIF text to a stream
and ``next()`` raises, so the collector must pass ``streaming=False`` (or a
``callback``, which gets the same dict). After a modify of a group the dict is::

    {
        "type": "searchResEntry",
        "dn": "cn=eng,ou=groups,ou=<test>,dc=example,dc=org",
        "raw_dn": b"cn=eng,ou=groups,ou=<test>,dc=example,dc=org",
        "changeType": "modify",     # from the Entry Change Notification control:
                                    # "add" | "delete" | "modify" | "modify dn"
        "changeNumber": None,       # key always present, but 389-ds never fills it in
        "previousDN": None,         # set (as a pyasn1 value, use str()) only for "modify dn"
        "controls": {},             # the decoded ECN control (2.16.840.1.113730.3.4.7) is removed
        "raw_attributes": {         # ldap3 CaseInsensitiveDict: attribute -> list[bytes]
            "member": [b"uid=alice,...", b"uid=bob,..."],     # the entry AFTER the change
            "modifiersName": [b"uid=carol,ou=people,ou=<test>,dc=example,dc=org"],
            "modifyTimestamp": [b"20260101120000Z"],
            "cn": [b"eng"],
        },
        "attributes": {...},        # same, decoded with the server schema ldap3 read at bind:
                                    # lists for multi-valued attributes, a str for single-valued
                                    # ones (modifiersName), a datetime for modifyTimestamp
    }

So ``changeType`` and ``changeNumber`` are top-level keys of the entry, but the
event carries the whole entry after the change, not the delta: which members were
added or removed must be worked out against the previous state. ``changeNumber``
stays ``None`` because 389-ds passes 0 as the change number to its persistent
search code for every operation, and a 0 is left out of the control; enabling the
Retro Changelog plugin does not change that. A number per change exists only in
the retro changelog (``changenumber=N,cn=changelog`` entries), shown by the last
test. Persistent search has no resume point: changes made while no search is
open are lost, and the server only starts sending once it has registered the
search, which the tests wait for by writing to a probe entry until its event arrives.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ldap3 import ASYNC_STREAM, MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, SUBTREE, Connection, Server

from tests.integration.servers.dirsrv import DirSrv

# Until conftest imports the fixtures itself.

pytestmark = [pytest.mark.integration, pytest.mark.directory_servers]

EVENT_TIMEOUT = 30.0
ATTRIBUTES = ["cn", "member", "modifiersName", "modifyTimestamp"]


class Tree:
    """DNs of one test's own subtree, so tests sharing the session server never collide."""

    def __init__(self, base_dn: str) -> None:
        self.root = f"ou=t{uuid.uuid4().hex[:10]},{base_dn}"
        self.people = f"ou=people,{self.root}"
        self.groups = f"ou=groups,{self.root}"

    def user(self, uid: str) -> str:
        return f"uid={uid},{self.people}"

    def group(self, cn: str) -> str:
        return f"cn={cn},{self.groups}"


def populate(server: DirSrv, tree: Tree, admin_password: str) -> None:
    """People, groups with ``member`` DNs, and carol allowed to edit group membership."""
    carol_may_edit_members = (
        f'(targetattr="member")(version 3.0; acl "group admins"; allow (write) userdn="ldap:///{tree.user("carol")}";)'
    )
    server.add_entries(
        [
            (tree.root, ["organizationalUnit"], {}),
            (tree.people, ["organizationalUnit"], {}),
            (tree.groups, ["organizationalUnit"], {"aci": carol_may_edit_members}),
            (tree.user("alice"), ["inetOrgPerson"], {"cn": "Alice", "sn": "A"}),
            (tree.user("bob"), ["inetOrgPerson"], {"cn": "Bob", "sn": "B"}),
            (tree.user("carol"), ["inetOrgPerson"], {"cn": "Carol", "sn": "C", "userPassword": admin_password}),
            (tree.group("eng"), ["groupOfNames"], {"member": [tree.user("alice")]}),
            (tree.group("ops"), ["groupOfNames"], {"member": [tree.user("bob")]}),
            (tree.group("probe"), ["groupOfNames"], {"member": [tree.user("alice")]}),
        ]
    )


def connect_as(server: DirSrv, dn: str, password: str) -> Connection:
    return Connection(Server(server.uri), dn, password, auto_bind=True)


def next_event_for(ps: Any, dn: str, timeout: float = EVENT_TIMEOUT) -> dict[str, Any]:
    """The next persistent-search event about ``dn``, skipping events about other entries."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        event = ps.next(block=True, timeout=left)
        if event is not None and event["dn"].lower() == dn.lower():
            return event
    raise AssertionError(f"no persistent-search event for {dn} within {timeout}s")


def wait_until_live(ps: Any, admin: Connection, probe_dn: str, timeout: float = EVENT_TIMEOUT) -> None:
    """Touch ``probe_dn`` until the search reports it: from then on it sees every change."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        assert admin.modify(probe_dn, {"description": [(MODIFY_REPLACE, [f"probe {attempt}"])]}), admin.result
        event = ps.next(block=True, timeout=1.0)
        while event is not None:
            if event["dn"].lower() == probe_dn.lower():
                return
            event = ps.next(block=False)
    raise AssertionError(f"persistent search never reported changes to {probe_dn} within {timeout}s")


@pytest.fixture
def persistent_search(dirsrv: DirSrv) -> Iterator[tuple[Tree, Any, Connection]]:
    """A populated tree, a live persistent search on its groups, and an admin connection."""
    tree = Tree(dirsrv.base_dn)
    populate(dirsrv, tree, dirsrv.password)
    admin = dirsrv.connect()
    search_conn = dirsrv.connect(client_strategy=ASYNC_STREAM)
    ps = search_conn.extend.standard.persistent_search(
        search_base=tree.groups,
        search_filter="(objectClass=groupOfNames)",
        search_scope=SUBTREE,
        attributes=ATTRIBUTES,
        changes_only=True,
        notifications=True,
        streaming=False,
    )
    try:
        wait_until_live(ps, admin, tree.group("probe"))
        yield tree, ps, admin
    finally:
        ps.stop()  # abandons the search and unbinds its connection
        admin.unbind()


def test_member_change_arrives_with_change_type_new_members_and_modifier(
    dirsrv: DirSrv, persistent_search: tuple[Tree, Any, Connection]
) -> None:
    tree, ps, _admin = persistent_search
    carol = connect_as(dirsrv, tree.user("carol"), dirsrv.password)
    try:
        assert carol.modify(tree.group("eng"), {"member": [(MODIFY_ADD, [tree.user("bob")])]}), carol.result
        added = next_event_for(ps, tree.group("eng"))
        assert carol.modify(tree.group("eng"), {"member": [(MODIFY_DELETE, [tree.user("alice")])]}), carol.result
        removed = next_event_for(ps, tree.group("eng"))
    finally:
        carol.unbind()

    assert added["type"] == "searchResEntry"
    assert added["changeType"] == "modify"
    assert "changeNumber" in added
    assert added["changeNumber"] is None  # 389-ds never sends one, see the module docstring
    assert added["previousDN"] is None
    assert added["controls"] == {}
    raw = added["raw_attributes"]
    assert sorted(raw["member"]) == sorted([tree.user("alice").encode(), tree.user("bob").encode()])
    assert [value.decode().lower() for value in raw["modifiersName"]] == [tree.user("carol").lower()]
    assert raw["cn"] == [b"eng"]
    assert isinstance(raw["modifyTimestamp"][0], bytes)
    assert added["attributes"]["modifiersName"].lower() == tree.user("carol").lower()

    assert removed["changeType"] == "modify"
    assert removed["raw_attributes"]["member"] == [tree.user("bob").encode()]


def test_add_and_delete_of_groups_carry_their_change_type(
    dirsrv: DirSrv, persistent_search: tuple[Tree, Any, Connection]
) -> None:
    tree, ps, admin = persistent_search
    new_group = tree.group("new")
    assert admin.add(new_group, ["groupOfNames"], {"member": [tree.user("alice")]}), admin.result
    added = next_event_for(ps, new_group)
    assert admin.delete(new_group), admin.result
    deleted = next_event_for(ps, new_group)

    assert added["changeType"] == "add"
    assert added["raw_attributes"]["member"] == [tree.user("alice").encode()]
    assert deleted["changeType"] == "delete"
    # A delete reports the entry as it was just before it went away.
    assert deleted["raw_attributes"]["member"] == [tree.user("alice").encode()]


def test_retro_changelog_numbers_changes_that_persistent_search_does_not(tmp_path: Path) -> None:
    with DirSrv(tmp_path, retro_changelog=True) as server:
        tree = Tree(server.base_dn)
        populate(server, tree, server.password)
        admin = server.connect()
        search_conn = server.connect(client_strategy=ASYNC_STREAM)
        ps = search_conn.extend.standard.persistent_search(
            search_base=tree.groups,
            search_filter="(objectClass=groupOfNames)",
            attributes=ATTRIBUTES,
            changes_only=True,
            notifications=True,
            streaming=False,
        )
        try:
            wait_until_live(ps, admin, tree.group("probe"))
            assert admin.modify(tree.group("ops"), {"member": [(MODIFY_ADD, [tree.user("carol")])]}), admin.result
            event = next_event_for(ps, tree.group("ops"))
            assert event["changeType"] == "modify"
            assert event["changeNumber"] is None

            assert admin.search(
                "cn=changelog",
                f"(&(targetDn={tree.group('ops')})(changeType=modify))",
                attributes=["changeNumber", "targetDn", "changeType", "changes"],
            ), admin.result
            record = admin.response[-1]["raw_attributes"]
            assert int(record["changeNumber"][0]) > 0
            assert record["changeType"] == [b"modify"]
            assert f"add: member\nmember: {tree.user('carol')}\n".encode() in record["changes"][0]
        finally:
            ps.stop()
            admin.unbind()
