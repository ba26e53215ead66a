"""Windows' read check on an NT security descriptor: may a token list this folder or read this file (pure).

`nt_read_decision` walks the DACL in order the way Windows' access check does (MS-DTYP 2.5.3.2): an ACE whose
trustee is in the token grants the requested bits it allows and denies those it denies, each bit decided by the
first ACE that names it, so a deny placed after an allow for the same bit changes nothing. Inherit-only ACEs are
skipped (they are for children), generic rights are mapped to file rights first (GENERIC_READ and GENERIC_ALL
include FILE_READ_DATA), a null or absent DACL grants everything and an empty one nothing. The bit asked for is
FILE_LIST_DIRECTORY for a folder and FILE_READ_DATA for a file (the same bit, 0x1). ACE kinds whose condition
this check cannot evaluate (callback and object ACEs) are judged on the side of exposure: an allow counts, a deny
does not, and the decision names them as unjudged. The descriptor is taken structurally (`Descriptor`, `Entry`),
so the processor does not import a collector; `user_token` builds the SIDs Samba puts in a user's token.
`nt_readers` is the same check for everybody at once on the contract's `NtAcl`: people are bitsets (see
processor/state.py) and ``members_of(sid)`` says whose token holds a SID; unit tests hold it equal to
`nt_read_decision` run per user.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from permwatch.events import NtAceFlag, NtAcl

FILE_READ_DATA = 0x00000001  # FILE_LIST_DIRECTORY on a folder
FILE_TRAVERSE = 0x00000020  # FILE_EXECUTE on a file
GENERIC_ALL = 0x10000000
GENERIC_EXECUTE = 0x20000000
GENERIC_WRITE = 0x40000000
GENERIC_READ = 0x80000000
FILE_GENERIC_READ = 0x00120089
FILE_GENERIC_WRITE = 0x00120116
FILE_GENERIC_EXECUTE = 0x001200A0
FILE_ALL_ACCESS = 0x001F01FF

ACCESS_ALLOWED = 0x00
ACCESS_DENIED = 0x01
_ALLOW_KINDS = frozenset({0x00, 0x04, 0x05, 0x09, 0x0B})  # allowed, compound, object, callback, callback object
_DENY_KINDS = frozenset({0x01, 0x06, 0x0A, 0x0C})  # denied, object, callback, callback object
INHERIT_ONLY = 0x08

EVERYONE = "S-1-1-0"
AUTHENTICATED_USERS = "S-1-5-11"
BUILTIN_USERS = "S-1-5-32-545"
UNIX_USER_PREFIX = "S-1-22-1-"
UNIX_GROUP_PREFIX = "S-1-22-2-"


class Entry(Protocol):
    """One ACE as the check needs it (`collectors.ntacl.Ace` has this shape)."""

    @property
    def ace_type(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def access_mask(self) -> int: ...
    @property
    def trustee(self) -> str | None: ...


class Descriptor(Protocol):
    """A security descriptor as the check needs it: ``dacl`` None for a null DACL."""

    @property
    def dacl_present(self) -> bool: ...
    @property
    def dacl(self) -> Sequence[Entry] | None: ...


@dataclass(frozen=True, slots=True)
class ReadDecision:
    """The answer and why: ``deciding_ace`` is the index of the DACL entry that granted or denied the bit (None
    for a null/absent DACL, or when no entry named it); ``unjudged`` lists entries whose condition was not
    evaluated (callback/object kinds) but that matched the token."""

    allowed: bool
    deciding_ace: int | None
    reason: str
    unjudged: tuple[int, ...] = ()


def map_generic(mask: int) -> int:
    """Map GENERIC_* bits to file rights (the file generic mapping Samba and Windows use), dropping them."""
    mapped = mask & ~(GENERIC_ALL | GENERIC_EXECUTE | GENERIC_WRITE | GENERIC_READ)
    if mask & GENERIC_READ:
        mapped |= FILE_GENERIC_READ
    if mask & GENERIC_WRITE:
        mapped |= FILE_GENERIC_WRITE
    if mask & GENERIC_EXECUTE:
        mapped |= FILE_GENERIC_EXECUTE
    if mask & GENERIC_ALL:
        mapped |= FILE_ALL_ACCESS
    return mapped


def user_token(
    user_sid: str,
    group_sids: Iterable[str] = (),
    *,
    uid: int | None = None,
    gids: Iterable[int] = (),
    authenticated: bool = True,
    builtin_users: bool = True,
) -> frozenset[str]:
    """The SIDs in a logged-on user's token: the user's and groups' SIDs, Everyone, Authenticated Users (unless
    a guest), BUILTIN\\Users (unless ``builtin_users`` is false: a standalone smbd without a group mapping
    leaves it out) and Samba's Unix-id SIDs S-1-22-1-uid / S-1-22-2-gid, which Samba adds for the user's Unix
    ids."""
    sids = {user_sid, *group_sids, EVERYONE}
    if authenticated:
        sids.add(AUTHENTICATED_USERS)
    if builtin_users:
        sids.add(BUILTIN_USERS)
    if uid is not None:
        sids.add(f"{UNIX_USER_PREFIX}{uid}")
    sids.update(f"{UNIX_GROUP_PREFIX}{gid}" for gid in gids)
    return frozenset(sids)


def nt_read_decision(descriptor: Descriptor, token: frozenset[str]) -> ReadDecision:
    """Whether ``token`` may list (a folder) or read (a file) the object ``descriptor`` protects, and why."""
    if not descriptor.dacl_present or descriptor.dacl is None:
        return ReadDecision(True, None, "no DACL (null or absent): everyone has every right")
    if not descriptor.dacl:
        return ReadDecision(False, None, "empty DACL: nobody has any right")
    unjudged: list[int] = []
    for index, ace in enumerate(descriptor.dacl):
        if ace.flags & INHERIT_ONLY or ace.trustee not in token:
            continue
        kind = ace.ace_type
        judged = kind in (ACCESS_ALLOWED, ACCESS_DENIED)
        if not map_generic(ace.access_mask) & FILE_READ_DATA:
            continue
        if kind in _DENY_KINDS:
            if not judged:
                unjudged.append(index)  # a conditional deny we cannot evaluate must not hide a reader
                continue
            return ReadDecision(False, index, f"denied by ACE {index} for {ace.trustee}", tuple(unjudged))
        if kind in _ALLOW_KINDS:
            if not judged:
                unjudged.append(index)
            return ReadDecision(True, index, f"allowed by ACE {index} for {ace.trustee}", tuple(unjudged))
    return ReadDecision(False, None, "no ACE for the token grants read", tuple(unjudged))


def nt_can_read(descriptor: Descriptor, token: frozenset[str]) -> bool:
    """`nt_read_decision` without the explanation."""
    return nt_read_decision(descriptor, token).allowed


EVERYBODY = -1
"""The bitset of all people: what a null or absent DACL admits (the POSIX side narrows it)."""


@dataclass(frozen=True, slots=True)
class NtGrant:
    """One ACE that admits people to read: its index in the DACL and whom it admitted (before POSIX)."""

    index: int
    people: int


def nt_readers(
    nt_acl: NtAcl, members_of: Callable[[str], int], right: int = FILE_READ_DATA
) -> tuple[int, tuple[NtGrant, ...]]:
    """Everyone the DACL lets list (a folder) or read (a file), and the allow ACEs that decided it (``right``
    another bit, e.g. `FILE_TRAVERSE`: everyone it grants that).

    The per-bit walk of `nt_read_decision` run for all tokens at once: people not yet decided for the read bit
    are decided by the first applicable ACE naming it (inherit-only ones skipped, generic bits mapped); a deny
    takes them out, an allow lets them in. A conditional deny is not evaluated and so decides nobody."""
    if not nt_acl.dacl_present or nt_acl.dacl is None:
        return EVERYBODY, ()
    undecided = EVERYBODY
    allowed = 0
    grants: list[NtGrant] = []
    for index, ace in enumerate(nt_acl.dacl):
        if NtAceFlag.INHERIT_ONLY in ace.flags or not map_generic(ace.mask) & right:
            continue
        hit = members_of(ace.trustee) & undecided
        if not hit:
            continue
        if ace.type == "deny":
            if not ace.conditional:
                undecided &= ~hit
            continue
        allowed |= hit
        undecided &= ~hit
        grants.append(NtGrant(index, hit))
    return allowed, tuple(grants)
