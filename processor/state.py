"""What the processor knows: the directory's group graph and every path's permissions.

People are bits: each principal gets a stable index, and a set of people is a
Python ``int`` used as a bitset, so unions, intersections and head counts over
thousands of users are single machine-level operations. :class:`Directory`
holds users and groups (nested, possibly cyclic) and answers "who is in this
group" two ways: *effectively* (through nesting and primary groups, the way
the operating system resolves an ACL entry) and *directly* (members listed on
the group itself plus users whose primary group it is, the way a label's
audience is judged). Users and groups may carry Windows SIDs, and
:meth:`Directory.sid_members` answers "whose SMB token holds this SID" for the
NT ACL check (well-known SIDs and Samba's Unix-id SIDs included); names and
SIDs are accepted alike wherever a label names a principal.
:class:`PathTable` holds the permission state of every path the collectors
reported, as a tree; the state of a Samba share's path also holds the share's door (:class:`ShareGate`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from sys import intern
from typing import TypeVar

from permwatch.events import AclEntry, AclTag, DirectoryGroup, DirectoryUser, FsPermissionEvent, NtAcl, ObjectType

EVERYONE = "S-1-1-0"
AUTHENTICATED_USERS = "S-1-5-11"
BUILTIN_USERS = "S-1-5-32-545"
CREATOR_OWNER = "S-1-3-0"
CREATOR_GROUP = "S-1-3-1"
UNIX_USER_PREFIX = "S-1-22-1-"
UNIX_GROUP_PREFIX = "S-1-22-2-"
WELL_KNOWN_SIDS = {
    EVERYONE: "Everyone",
    AUTHENTICATED_USERS: "Authenticated Users",
    BUILTIN_USERS: "BUILTIN\\Users",
    CREATOR_OWNER: "CREATOR OWNER",
    CREATOR_GROUP: "CREATOR GROUP",
    "S-1-3-4": "OWNER RIGHTS",
    "S-1-5-18": "SYSTEM",
    "S-1-5-32-544": "BUILTIN\\Administrators",
}
"""SIDs every Windows system knows by name. Everyone and Authenticated Users are in every logged-on user's token
on Samba; BUILTIN\\Users holds whom the server makes its members (see `Directory.sid_members`); CREATOR
OWNER/GROUP only matter in inheritable ACEs and match nobody."""
_EVERY_LOGON = frozenset({EVERYONE, AUTHENTICATED_USERS})
_DOMAIN_RIDS = {"512": "Domain Admins", "513": "Domain Users", "514": "Domain Guests"}
"""Well-known relative ids of a domain's groups, to name a SID the directory does not list."""


@dataclass(slots=True)
class User:
    name: str
    index: int
    """The user's position in people bitsets."""
    uid: int | None = None
    primary_gid: int | None = None
    disabled: bool = False
    in_directory: bool = True
    sid: str | None = None
    primary_group_sid: str | None = None

    @property
    def bit(self) -> int:
        # Computed, not stored: the 100,000th user's bit alone is a 12.5 KB integer, and storing every
        # user's would cost n²/16 bytes (625 MB for 100,000 people).
        return 1 << self.index


@dataclass(slots=True)
class Group:
    name: str
    gid: int | None = None
    member_users: frozenset[str] = frozenset()
    member_groups: frozenset[str] = frozenset()
    sid: str | None = None


def popcount(mask: int) -> int:
    return mask.bit_count()


class Directory:
    """Users and groups, with cached membership bitsets that reset on every change."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.groups: dict[str, Group] = {}
        self._names: list[str] = []
        self._by_uid: dict[int, str] = {}
        self._by_gid: dict[int, str] = {}
        self._by_sid: dict[str, str] = {}
        """SID -> user or group name (a SID is unique across both)."""
        self._by_primary_sid: dict[str, int] | None = None
        self._effective: dict[str, int] = {}
        self._direct: dict[str, int] = {}
        self._by_primary: dict[int, int] | None = None
        self._parents: dict[str, set[str]] | None = None
        self._everyone: int | None = None
        self.version = 0

    # ------------------------------------------------------------- updates

    def apply_user(self, event: DirectoryUser) -> None:
        old = self.users.get(event.name)
        if event.deleted:
            if old is not None and old.in_directory:
                old.disabled = True
                old.in_directory = False
                self._forget_uid(old)
                self._changed()
            return
        user = old or self._new_user(event.name)
        self._forget_uid(user)
        user.uid, user.primary_gid, user.disabled, user.in_directory = (
            event.uid,
            event.primary_gid,
            event.disabled,
            True,
        )
        if user.uid is not None:
            self._by_uid[user.uid] = user.name
        self._set_sid(user.sid, event.sid, user.name)
        user.sid, user.primary_group_sid = event.sid, event.primary_group_sid
        self._changed()

    def apply_group(self, event: DirectoryGroup) -> bool:
        """Apply a group's new state; True when only its members changed (same gid, still there)."""
        old = self.groups.pop(event.name, None)
        if old is not None and old.gid is not None and self._by_gid.get(old.gid) == old.name:
            del self._by_gid[old.gid]
        self._set_sid(old.sid if old is not None else None, None if event.deleted else event.sid, event.name)
        if not event.deleted:
            group = Group(
                event.name, event.gid, frozenset(event.member_users), frozenset(event.member_groups), event.sid
            )
            self.groups[event.name] = group
            if group.gid is not None:
                self._by_gid[group.gid] = group.name
        self._changed()
        return old is not None and not event.deleted and old.gid == event.gid

    def _new_user(self, name: str, *, in_directory: bool = True) -> User:
        user = User(name=name, index=len(self._names), in_directory=in_directory)
        self._names.append(name)
        self.users[name] = user
        return user

    def _set_sid(self, old: str | None, new: str | None, name: str) -> None:
        if old is not None and self._by_sid.get(old) == name:
            del self._by_sid[old]
        if new is not None:
            self._by_sid[new] = name

    def _forget_uid(self, user: User) -> None:
        if user.uid is not None and self._by_uid.get(user.uid) == user.name:
            del self._by_uid[user.uid]

    def _changed(self) -> None:
        self.version += 1
        self._effective.clear()
        self._direct.clear()
        self._by_primary = None
        self._by_primary_sid = None
        self._parents = None
        self._everyone = None

    # ------------------------------------------------------------- lookups

    def user_bit(self, name: str) -> int:
        """The user named ``name`` (or whose SID it is), unless disabled or unknown."""
        user = self.users.get(self._by_sid.get(name, name))
        return 0 if user is None or user.disabled else user.bit

    def name_of_uid(self, uid: int) -> str | None:
        """The name of the user with ``uid``, when one is known (no principal is made for it)."""
        return self._by_uid.get(uid)

    def user_for_uid(self, uid: int, hint: str | None) -> User:
        """The user with ``uid``; a local account unknown to the directory becomes a principal of its own."""
        name = self._by_uid.get(uid)
        if name is not None:
            return self.users[name]
        local = f"uid:{uid}" if hint is None or hint in self.users else hint
        existing = self.users.get(local)
        if existing is not None and existing.uid == uid:
            return existing
        user = self._new_user(local if existing is None else f"uid:{uid}", in_directory=False)
        user.uid = uid
        self._by_uid[uid] = user.name
        self._changed()  # a label may allow this principal by name: its audience is worth asking again
        return user

    def group_for_gid(self, gid: int) -> str | None:
        return self._by_gid.get(gid)

    def names(self, mask: int) -> Iterator[str]:
        """The principal names in a bitset, in index order."""
        while mask:
            low = mask & -mask
            yield self._names[low.bit_length() - 1]
            mask ^= low

    def everyone(self) -> int:
        """Every enabled account in the directory: what the ACL's ``other`` entry reaches."""
        if self._everyone is None:
            mask = 0
            for user in self.users.values():
                if user.in_directory and not user.disabled:
                    mask |= user.bit
            self._everyone = mask
        return self._everyone

    def direct_members(self, group: str) -> int:
        """Listed members plus users whose primary group this is (by gid, or by SID: AD's Domain Users lists
        nobody as ``member``); no nesting. ``group`` is a name or the group's SID."""
        cached = self._direct.get(group)
        if cached is not None:
            return cached
        mask = 0
        g = self.groups.get(self._by_sid.get(group, group))
        if g is not None:
            for name in g.member_users:
                mask |= self.user_bit(name)
            if g.gid is not None:
                mask |= self._primary_members().get(g.gid, 0)
            if g.sid is not None:
                mask |= self._primary_sid_members().get(g.sid, 0)
        elif group.startswith("S-1-"):  # a primary group the directory does not list (AD's Domain Users)
            mask = self._primary_sid_members().get(group, 0)
        self._direct[group] = mask
        return mask

    def _primary_sid_members(self) -> dict[str, int]:
        if self._by_primary_sid is None:
            index: dict[str, int] = {}
            for user in self.users.values():
                if user.primary_group_sid is not None and not user.disabled:
                    index[user.primary_group_sid] = index.get(user.primary_group_sid, 0) | user.bit
            self._by_primary_sid = index
        return self._by_primary_sid

    def name_of_sid(self, sid: str) -> str | None:
        """The user's or group's name for ``sid``: well-known, a Unix id Samba maps, or from the directory."""
        if sid in WELL_KNOWN_SIDS:
            return WELL_KNOWN_SIDS[sid]
        if sid.startswith(UNIX_USER_PREFIX) and sid[len(UNIX_USER_PREFIX) :].isdigit():
            return self._by_uid.get(int(sid[len(UNIX_USER_PREFIX) :]))
        if sid.startswith(UNIX_GROUP_PREFIX) and sid[len(UNIX_GROUP_PREFIX) :].isdigit():
            return self._by_gid.get(int(sid[len(UNIX_GROUP_PREFIX) :]))
        name = self._by_sid.get(sid)
        if name is None and sid.startswith("S-1-5-21-"):
            return _DOMAIN_RIDS.get(sid.rsplit("-", 1)[1])
        return name

    def group_of_sid(self, sid: str) -> str | None:
        """The directory group ``sid`` names (its own SID, or Samba's S-1-22-2-gid), if any."""
        if sid.startswith(UNIX_GROUP_PREFIX) and sid[len(UNIX_GROUP_PREFIX) :].isdigit():
            return self._by_gid.get(int(sid[len(UNIX_GROUP_PREFIX) :]))
        name = self._by_sid.get(sid)
        return name if name in self.groups else None

    def sid_members(self, sid: str) -> int:
        """The people whose SMB logon token holds ``sid``, as Samba builds it: every logged-on user holds
        Everyone and Authenticated Users; a user its own SID and S-1-22-1-<uid>; the SIDs of its groups, nested
        and primary (AD puts the whole nesting in the token), and S-1-22-2-<gid> of its Unix groups.
        BUILTIN\\Users is the group the directory publishes under that SID, else everybody. CREATOR
        OWNER/GROUP and unknown SIDs match nobody."""
        if sid in _EVERY_LOGON:
            return self.everyone()
        if sid.startswith(UNIX_USER_PREFIX) and sid[len(UNIX_USER_PREFIX) :].isdigit():
            name = self._by_uid.get(int(sid[len(UNIX_USER_PREFIX) :]))
            return 0 if name is None else self.user_bit(name)
        if sid.startswith(UNIX_GROUP_PREFIX) and sid[len(UNIX_GROUP_PREFIX) :].isdigit():
            return self.gid_members(int(sid[len(UNIX_GROUP_PREFIX) :]))
        name = self._by_sid.get(sid)
        if name is None and sid == BUILTIN_USERS:
            # the directory does not say who the server's BUILTIN\Users are (an AD domain makes Domain Users a
            # member; a standalone Samba without a group mapping nobody): assume everybody, the side of exposure
            return self.everyone()
        if name is None:
            return self._primary_sid_members().get(sid, 0)  # AD's Domain Users: nobody's member, everybody's primary
        if name in self.groups:
            return self.effective_members(name)
        return self.user_bit(name)

    def gid_members(self, gid: int) -> int:
        """Everyone an ACL entry for ``gid`` lets in, as the kernel decides it.

        The kernel compares gids, not names: the group with that gid counts
        with its nesting and primary members, and a gid no group entry has
        still counts the users whose primary gid it is (a user's own group
        that was never created in the directory, a gid of a deleted group).
        """
        name = self._by_gid.get(gid)
        if name is not None:
            return self.effective_members(name)
        return self._primary_members().get(gid, 0)

    def _primary_members(self) -> dict[int, int]:
        if self._by_primary is None:
            index: dict[int, int] = {}
            for user in self.users.values():
                if user.primary_gid is not None and not user.disabled:
                    index[user.primary_gid] = index.get(user.primary_gid, 0) | user.bit
            self._by_primary = index
        return self._by_primary

    def effective_members(self, group: str) -> int:
        """Everyone the operating system counts as a member: through nesting, cycles included."""
        cached = self._effective.get(group)
        if cached is not None:
            return cached
        mask = 0
        for name in self.nested_groups(group):
            mask |= self.direct_members(name)
        self._effective[group] = mask
        return mask

    def nested_groups(self, group: str) -> list[str]:
        """``group`` and every group nested into it, breadth first, each once."""
        seen = {group}
        order = [group]
        i = 0
        while i < len(order):
            g = self.groups.get(order[i])
            i += 1
            if g is None:
                continue
            for child in sorted(g.member_groups):
                if child not in seen:
                    seen.add(child)
                    order.append(child)
        return order

    def containing_groups(self, group: str) -> set[str]:
        """``group`` and every group it is nested into, transitively."""
        if self._parents is None:
            parents: dict[str, set[str]] = {}
            for g in self.groups.values():
                for child in g.member_groups:
                    parents.setdefault(child, set()).add(g.name)
            self._parents = parents
        seen = {group}
        stack = [group]
        while stack:
            for parent in self._parents.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    def chain(self, top: str, member: str) -> tuple[str, ...]:
        """The nesting path from ``member`` up to ``top`` (shortest), e.g. ('alla', 'ledningsgrupp')."""
        previous: dict[str, str | None] = {top: None}
        queue = [top]
        for current in queue:
            if current == member:
                break
            g = self.groups.get(current)
            for child in sorted(g.member_groups) if g else ():
                if child not in previous:
                    previous[child] = current
                    queue.append(child)
        path: list[str] = []
        node: str | None = member
        while node is not None:
            path.append(node)
            node = previous.get(node)
        return tuple(path)


# ---------------------------------------------------------------- path table


@dataclass(frozen=True, slots=True)
class ShareGate:
    """A Samba share's door (issue 16, item 6): smbd lets a user connect only when ``valid users`` (if any) names
    them, ``invalid users`` does not, and the share ACL grants them read. Entries as smb.conf writes them; ``acl``
    None when the share ACL could not be read (``error`` says why: it then narrows nobody). Held by the permission
    state of the share's path, so its verdict gates reading and traversing it (see processor/readers.py)."""

    name: str
    valid_users: tuple[str, ...] = ()
    invalid_users: tuple[str, ...] = ()
    acl: NtAcl | None = None
    error: str | None = None


AclTuple = (
    tuple[int, int, tuple[tuple[int, int, int], ...]]
    | tuple[int, int, tuple[tuple[int, int, int], ...], NtAcl | None]
    | tuple[int, int, tuple[tuple[int, int, int], ...], NtAcl | None, tuple[ShareGate, ...]]
)
"""(owner uid, group gid, ((tag, qualifier, perms), ...)): the permission state of a path; on a Samba share
with an NT ACL of its own (stored or unreadable), that :class:`NtAcl` fourth, as both are enforced; at a Samba
share's path, the shares of that path fifth (the NT ACL then None when it has none of its own)."""
AclKey = int
"""A permission state interned to a small int: hashing nested tuples on every lookup
costs more than judging, and a share has few distinct states."""

_ACL_IDS: dict[AclTuple, AclKey] = {}
_ACL_TUPLES: list[AclTuple] = []
_ENTRIES: dict[tuple[int, int, int], tuple[int, int, int]] = {}
"""ACL entries, shared: most ACLs repeat the same owner, owning-group, mask and other entries."""


def intern_acl(acl: AclTuple) -> AclKey:
    found = _ACL_IDS.get(acl)
    if found is None:
        owner, group, entries, *nt = acl
        acl = (owner, group, tuple(_ENTRIES.setdefault(entry, entry) for entry in entries), *nt)
        found = _ACL_IDS[acl] = len(_ACL_TUPLES)
        _ACL_TUPLES.append(acl)
    return found


def acl_tuple(key: AclKey) -> AclTuple:
    return _ACL_TUPLES[key]


def nt_part(key: AclKey) -> NtAcl | None:
    """The NT ACL a permission state holds besides its POSIX part (None: POSIX alone decides)."""
    acl = _ACL_TUPLES[key]
    return acl[3] if len(acl) >= 4 else None


def share_gates(key: AclKey) -> tuple[ShareGate, ...]:
    """The Samba shares whose path this permission state is (usually none)."""
    acl = _ACL_TUPLES[key]
    return acl[4] if len(acl) == 5 else ()


_TAG_CODES = {
    AclTag.USER_OBJ: 0,
    AclTag.USER: 1,
    AclTag.GROUP_OBJ: 2,
    AclTag.GROUP: 3,
    AclTag.MASK: 4,
    AclTag.OTHER: 5,
}
TAG_NAMES = {code: tag for tag, code in _TAG_CODES.items()}


@dataclass(frozen=True, slots=True)
class PathState:
    """A path's permission state. Immutable and interned: the many paths that share one state share one object."""

    object_type: ObjectType
    acl: AclKey
    owner_name: str | None = None
    group_name: str | None = None
    qualifier_names: tuple[tuple[int, int, str], ...] = ()

    def name_of(self, tag: int, qualifier: int) -> str | None:
        """The name the collector resolved for a named entry, as a hint when the directory lacks it."""
        for t, q, name in self.qualifier_names:
            if t == tag and q == qualifier:
                return name
        return None


_STATES: dict[PathState, PathState] = {}


def acl_key(event: FsPermissionEvent) -> AclKey:
    owner = event.owner.id if event.owner else -1
    group = event.group.id if event.group else -1
    if event.nt_acl is not None and event.nt_acl.remote:  # read over SMB: no POSIX part at all
        return intern_acl((owner, group, (), event.nt_acl))
    entries = event.acl or _minimal_acl(event.mode or 0)
    posix = tuple(sorted([(_TAG_CODES[e.tag], e.qualifier or 0, e.perms) for e in entries]))
    if event.nt_acl is not None and event.nt_acl.source != "posix":
        return intern_acl((owner, group, posix, event.nt_acl))
    return intern_acl((owner, group, posix))


def _minimal_acl(mode: int) -> tuple[AclEntry, ...]:
    return (
        AclEntry(tag=AclTag.USER_OBJ, perms=(mode >> 6) & 7),
        AclEntry(tag=AclTag.GROUP_OBJ, perms=(mode >> 3) & 7),
        AclEntry(tag=AclTag.OTHER, perms=mode & 7),
    )


def path_state(event: FsPermissionEvent) -> PathState:
    named = [(_TAG_CODES[e.tag], e.qualifier, e.name) for e in event.acl if e.qualifier is not None and e.name]
    names = tuple(sorted(named)) if named else ()
    state = PathState(
        object_type=event.object_type,
        acl=acl_key(event),
        owner_name=event.owner.name if event.owner else None,
        group_name=event.group.name if event.group else None,
        qualifier_names=names,
    )
    return _STATES.setdefault(state, state)


def gated(state: PathState, gates: tuple[ShareGate, ...]) -> PathState:
    """``state`` with ``gates`` as the shares of its path (none: the state as its own ACLs alone make it)."""
    acl = acl_tuple(state.acl)
    core = (acl[0], acl[1], acl[2], acl[3] if len(acl) >= 4 else None)
    key = intern_acl((*core, gates) if gates else core if core[3] is not None else core[:3])
    if key == state.acl:
        return state
    found = PathState(state.object_type, key, state.owner_name, state.group_name, state.qualifier_names)
    return _STATES.setdefault(found, found)


def parent_of(path: str) -> str:
    if path == "/":
        return "/"
    head = path.rsplit("/", 1)[0]
    return head or "/"


_GROUP_IDS: dict[AclKey, tuple[int, ...]] = {}
_TRUSTEES: dict[AclKey, tuple[str, ...]] = {}


def group_ids(key: AclKey) -> tuple[int, ...]:
    """The gids an ACL's group entries name: the owning group and every named group, and the Unix groups its NT
    ACL names as Samba's S-1-22-2-<gid>."""
    found = _GROUP_IDS.get(key)
    if found is None:
        acl = acl_tuple(key)
        gids = set()
        for tag, qualifier, _ in acl[2]:
            if tag == 2 and acl[1] >= 0:
                gids.add(acl[1])
            elif tag == 3:
                gids.add(qualifier)
        for sid in trustees(key):
            if sid.startswith(UNIX_GROUP_PREFIX) and sid[len(UNIX_GROUP_PREFIX) :].isdigit():
                gids.add(int(sid[len(UNIX_GROUP_PREFIX) :]))
        found = _GROUP_IDS[key] = tuple(sorted(gids))  # a tuple: a frozenset of two costs 216 bytes
    return found


def trustees(key: AclKey) -> tuple[str, ...]:
    """The SIDs an NT ACL's entries name (none for a POSIX-only state): a group's membership change reaches the
    paths that name it through these."""
    found = _TRUSTEES.get(key)
    if found is None:
        nt = nt_part(key)
        sids = {ace.trustee for ace in nt.dacl} if nt is not None and nt.dacl is not None else set()
        for gate in share_gates(key):  # a share ACL's trustees gate the share's path alike
            if gate.acl is not None and gate.acl.dacl is not None:
                sids.update(ace.trustee for ace in gate.acl.dacl)
        found = _TRUSTEES[key] = tuple(sorted(sids))
    return found


_K = TypeVar("_K", int, str)


def _move(index: dict[_K, set[str]], path: str, before: tuple[_K, ...], after: tuple[_K, ...]) -> None:
    """Take ``path`` out of ``index``'s sets for the keys in ``before`` only and into those in ``after`` only
    (a set left empty is removed)."""
    if before == after:
        return
    for key in before:
        if key not in after:
            paths = index.get(key)
            if paths is not None:
                paths.discard(path)
                if not paths:
                    del index[key]
    for key in after:
        if key not in before:
            index.setdefault(key, set()).add(path)


class PathTable:
    """Every known path's :class:`PathState`, with a child index for subtree walks
    and group indexes (gid → paths whose ACL names it; SID → paths whose NT ACL names it) for directory
    fan-out."""

    def __init__(self) -> None:
        self.states: dict[str, PathState] = {}
        self.children: dict[str, set[str]] = {}
        self.by_gid: dict[int, set[str]] = {}
        self.by_sid: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self.states)

    def get(self, path: str) -> PathState | None:
        return self.states.get(path)

    def put(self, path: str, state: PathState) -> PathState | None:
        old = self.states.get(path)
        self.states[path] = state
        if old is None and path != "/":
            # one string per parent, shared with the signatures that name it (processor/exposures.py)
            self.children.setdefault(intern(parent_of(path)), set()).add(path)
        if old is None or old.acl != state.acl:
            self._reindex(path, old, state)
        return old

    def _reindex(self, path: str, old: PathState | None, new: PathState) -> None:
        """Move ``path`` in the group indexes from what ``old`` names to what ``new`` names, touching only what
        differs (a path whose ACL changes mostly keeps its owning group)."""
        if old is None:
            self._index(path, new, drop=False)
            return
        _move(self.by_gid, path, group_ids(old.acl), group_ids(new.acl))
        _move(self.by_sid, path, trustees(old.acl), trustees(new.acl))

    def _index(self, path: str, state: PathState | None, *, drop: bool) -> None:
        if state is None:
            return
        gids, sids = group_ids(state.acl), trustees(state.acl)
        _move(self.by_gid, path, gids if drop else (), () if drop else gids)
        _move(self.by_sid, path, sids if drop else (), () if drop else sids)

    def remove_subtree(self, path: str) -> list[tuple[str, PathState | None]]:
        """Forget ``path`` and everything known beneath it; return what was removed, with its last state."""
        removed = []
        for p in list(self.subtree(path)):
            state = self.states.pop(p, None)
            self._index(p, state, drop=True)
            self.children.pop(p, None)
            removed.append((p, state))
        siblings = self.children.get(parent_of(path))
        if siblings is not None:
            siblings.discard(path)
        return removed

    def subtree(self, path: str) -> Iterator[str]:
        """``path`` (when known) and every known path beneath it, parents before children."""
        if path in self.states:
            yield path
        stack = sorted(self.children.get(path, ()), reverse=True)
        while stack:
            p = stack.pop()
            if p in self.states:
                yield p
            stack.extend(sorted(self.children.get(p, ()), reverse=True))
