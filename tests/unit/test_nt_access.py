"""Unit tests for Windows' read check (`processor.nt_access`) on decoded NT security descriptors.

Cases follow MS-DTYP 2.5.3.2: the first ACE naming the bit decides, inherit-only ACEs are skipped, generic rights
are mapped, a null DACL admits everyone and an empty one nobody. A hypothesis property compares the check with a
straightforward implementation of the whole per-bit algorithm (granted and denied masks over every bit).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.ntacl import SE_DACL_PRESENT, SE_SELF_RELATIVE, Ace, AceFlags, AceType, SecurityDescriptor
from processor.nt_access import (
    AUTHENTICATED_USERS,
    BUILTIN_USERS,
    EVERYONE,
    FILE_READ_DATA,
    GENERIC_ALL,
    GENERIC_READ,
    map_generic,
    nt_can_read,
    nt_read_decision,
    user_token,
)

ALICE = "S-1-5-21-1-2-3-1001"
BOB = "S-1-5-21-1-2-3-1002"
MANAGERS = "S-1-5-21-1-2-3-2001"
READ = 0x001200A9
ALICE_TOKEN = user_token(ALICE, [MANAGERS], uid=1002, gids=[1002])
BOB_TOKEN = user_token(BOB, uid=1003, gids=[1003])
NONE = AceFlags(0)


def sd(*aces: Ace, present: bool = True, null: bool = False) -> SecurityDescriptor:
    control = SE_SELF_RELATIVE | (SE_DACL_PRESENT if present else 0)
    return SecurityDescriptor(1, control, ALICE, MANAGERS, None if null else tuple(aces), False)


def allow(trustee: str, mask: int = READ, flags: AceFlags = NONE) -> Ace:
    return Ace(AceType.ACCESS_ALLOWED, flags, mask, trustee)


def deny(trustee: str, mask: int = READ, flags: AceFlags = NONE) -> Ace:
    return Ace(AceType.ACCESS_DENIED, flags, mask, trustee)


def test_token_holds_the_well_known_and_unix_id_sids() -> None:
    assert {EVERYONE, AUTHENTICATED_USERS, BUILTIN_USERS, "S-1-22-1-1002", "S-1-22-2-1002", MANAGERS} <= ALICE_TOKEN
    assert AUTHENTICATED_USERS not in user_token("S-1-5-21-1-2-3-501", authenticated=False)


def test_null_absent_and_empty_dacls() -> None:
    assert nt_can_read(sd(null=True), BOB_TOKEN)
    assert nt_can_read(sd(deny(EVERYONE), present=False), BOB_TOKEN)  # a DACL without SE_DACL_PRESENT is ignored
    assert not nt_can_read(sd(), ALICE_TOKEN)


def test_authenticated_users_read_admits_every_logged_on_user() -> None:
    descriptor = sd(allow(AUTHENTICATED_USERS))
    assert nt_can_read(descriptor, BOB_TOKEN)
    assert not nt_can_read(descriptor, user_token("S-1-5-21-1-2-3-501", authenticated=False))


def test_deny_before_allow_wins_and_deny_after_allow_does_not() -> None:
    assert not nt_can_read(sd(deny(BOB), allow(EVERYONE)), BOB_TOKEN)
    assert nt_can_read(sd(deny(BOB), allow(EVERYONE)), ALICE_TOKEN)
    decision = nt_read_decision(sd(allow(EVERYONE), deny(BOB)), BOB_TOKEN)
    assert decision.allowed and decision.deciding_ace == 0


def test_a_deny_of_other_bits_does_not_stop_read() -> None:
    assert nt_can_read(sd(deny(BOB, 0x00000002), allow(BOB)), BOB_TOKEN)  # FILE_WRITE_DATA only


def test_the_captured_folder_deny_of_list_directory_stops_everyone() -> None:
    """The first folder smbd wrote in the tests: Everyone denied 0x1, then Everyone and more allowed READ."""
    folder = sd(deny(EVERYONE, 0x1), allow(EVERYONE), allow(AUTHENTICATED_USERS), allow("S-1-22-1-0", 0x1F01FF))
    assert not nt_can_read(folder, ALICE_TOKEN)
    assert not nt_can_read(folder, user_token("S-1-5-21-1-2-3-1000", uid=0, gids=[0]))


def test_inherit_only_aces_are_skipped_for_the_object_itself() -> None:
    oi_ci_io = AceFlags.OBJECT_INHERIT | AceFlags.CONTAINER_INHERIT | AceFlags.INHERIT_ONLY
    assert not nt_can_read(sd(allow(EVERYONE, flags=oi_ci_io)), ALICE_TOKEN)
    assert nt_can_read(sd(deny(EVERYONE, flags=oi_ci_io), allow(ALICE)), ALICE_TOKEN)
    inherited = AceFlags.INHERITED | AceFlags.OBJECT_INHERIT
    assert nt_can_read(sd(allow(ALICE, flags=inherited)), ALICE_TOKEN)


def test_generic_rights_are_mapped() -> None:
    assert map_generic(GENERIC_READ) & FILE_READ_DATA
    assert nt_can_read(sd(allow(BOB, GENERIC_READ)), BOB_TOKEN)
    assert nt_can_read(sd(allow(BOB, GENERIC_ALL)), BOB_TOKEN)
    assert not nt_can_read(sd(deny(BOB, GENERIC_READ), allow(BOB)), BOB_TOKEN)


def test_unjudged_kinds_err_on_the_side_of_exposure() -> None:
    callback_deny = Ace(AceType.ACCESS_DENIED_CALLBACK, NONE, READ, BOB)
    decision = nt_read_decision(sd(callback_deny, allow(EVERYONE)), BOB_TOKEN)
    assert decision.allowed and decision.unjudged == (0,)
    callback_allow = Ace(AceType.ACCESS_ALLOWED_CALLBACK, NONE, READ, BOB)
    decision = nt_read_decision(sd(callback_allow), BOB_TOKEN)
    assert decision.allowed and decision.unjudged == (0,)
    audit = Ace(AceType.SYSTEM_AUDIT, NONE, READ, BOB)
    assert not nt_can_read(sd(audit), BOB_TOKEN)


# -- against the whole per-bit algorithm ---------------------------------------------------------------------------


def reference_granted(descriptor: SecurityDescriptor, token: frozenset[str]) -> int:
    """MS-DTYP 2.5.3.2 for a request of every right: each bit goes to the first basic ACE that names it."""
    if not descriptor.dacl_present or descriptor.dacl is None:
        return 0xFFFFFFFF
    granted = denied = 0
    for ace in descriptor.dacl:
        if ace.inherit_only or ace.trustee not in token:
            continue
        mask = map_generic(ace.access_mask)
        if ace.ace_type == AceType.ACCESS_ALLOWED:
            granted |= mask & ~denied
        elif ace.ace_type == AceType.ACCESS_DENIED:
            denied |= mask & ~granted
    return granted


_trustees = st.sampled_from([ALICE, BOB, MANAGERS, EVERYONE, AUTHENTICATED_USERS, "S-1-22-1-1002", "S-1-5-32-544"])
_aces = st.builds(
    Ace,
    st.sampled_from([AceType.ACCESS_ALLOWED, AceType.ACCESS_DENIED]),
    st.sampled_from([0, 0x3, 0x8, 0xB, 0x10, 0x13]).map(AceFlags),
    st.sampled_from([READ, 0x1, 0x2, 0x20000, GENERIC_READ, GENERIC_ALL, 0x1F01FF, 0x1200A0]),
    _trustees,
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_aces, max_size=8), st.booleans())
def test_matches_the_per_bit_reference(aces: list[Ace], alice: bool) -> None:
    descriptor = sd(*aces)
    token = ALICE_TOKEN if alice else BOB_TOKEN
    assert nt_can_read(descriptor, token) == bool(reference_granted(descriptor, token) & FILE_READ_DATA)
