"""What the processor knows: the directory's group graph and every path's permissions.

People are bits: each principal gets a stable index, and a set of people is a
Python ``int`` used as a bitset, so unions, intersections and head counts over
thousands of users are single machine-level operations. :class:`Directory`
holds users and groups (nested, possibly cyclic) and answers "who is in this
group" two ways: *effectively* (through nesting and primary groups, the way
the operating system resolves an ACL entry) and *directly* (members listed on
the group itself plus users whose primary group it is, the way a label's
audience is judged). :class:`PathTable` holds the permission state of every
path the collectors reported, as a tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from sys import intern

from permwatch.events import AclEntry, AclTag, DirectoryGroup, DirectoryUser, FsPermissionEvent, ObjectType


@dataclass(slots=True)
class User:
    name: str
    index: int
    """The user's position in people bitsets."""
    uid: int | None = None
    primary_gid: int | None = None
    disabled: bool = False
    in_directory: bool = True

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
        self._changed()

    def apply_group(self, event: DirectoryGroup) -> bool:
        """Apply a group's new state; True when only its members changed (same gid, still there)."""
        old = self.groups.pop(event.name, None)
        if old is not None and old.gid is not None and self._by_gid.get(old.gid) == old.name:
            del self._by_gid[old.gid]
        if not event.deleted:
            group = Group(event.name, event.gid, frozenset(event.member_users), frozenset(event.member_groups))
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

    def _forget_uid(self, user: User) -> None:
        if user.uid is not None and self._by_uid.get(user.uid) == user.name:
            del self._by_uid[user.uid]

    def _changed(self) -> None:
        self.version += 1
        self._effective.clear()
        self._direct.clear()
        self._by_primary = None
        self._parents = None
        self._everyone = None

    # ------------------------------------------------------------- lookups

    def user_bit(self, name: str) -> int:
        user = self.users.get(name)
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
        """Listed members plus users whose primary group this is; no nesting."""
        cached = self._direct.get(group)
        if cached is not None:
            return cached
        mask = 0
        g = self.groups.get(group)
        if g is not None:
            for name in g.member_users:
                mask |= self.user_bit(name)
            if g.gid is not None:
                mask |= self._primary_members().get(g.gid, 0)
        self._direct[group] = mask
        return mask

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

AclTuple = tuple[int, int, tuple[tuple[int, int, int], ...]]
"""(owner uid, group gid, ((tag, qualifier, perms), ...)): the permission state of a path."""
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
        owner, group, entries = acl
        acl = (owner, group, tuple(_ENTRIES.setdefault(entry, entry) for entry in entries))
        found = _ACL_IDS[acl] = len(_ACL_TUPLES)
        _ACL_TUPLES.append(acl)
    return found


def acl_tuple(key: AclKey) -> AclTuple:
    return _ACL_TUPLES[key]


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
    entries = event.acl or _minimal_acl(event.mode or 0)
    return intern_acl((owner, group, tuple(sorted((_TAG_CODES[e.tag], e.qualifier or 0, e.perms) for e in entries))))


def _minimal_acl(mode: int) -> tuple[AclEntry, ...]:
    return (
        AclEntry(tag=AclTag.USER_OBJ, perms=(mode >> 6) & 7),
        AclEntry(tag=AclTag.GROUP_OBJ, perms=(mode >> 3) & 7),
        AclEntry(tag=AclTag.OTHER, perms=mode & 7),
    )


def path_state(event: FsPermissionEvent) -> PathState:
    names = tuple(
        sorted((_TAG_CODES[e.tag], e.qualifier, e.name) for e in event.acl if e.qualifier is not None and e.name)
    )
    state = PathState(
        object_type=event.object_type,
        acl=acl_key(event),
        owner_name=event.owner.name if event.owner else None,
        group_name=event.group.name if event.group else None,
        qualifier_names=names,
    )
    return _STATES.setdefault(state, state)


def parent_of(path: str) -> str:
    if path == "/":
        return "/"
    head = path.rsplit("/", 1)[0]
    return head or "/"


_GROUP_IDS: dict[AclKey, tuple[int, ...]] = {}


def group_ids(key: AclKey) -> tuple[int, ...]:
    """The gids an ACL's group entries name: the owning group and every named group."""
    found = _GROUP_IDS.get(key)
    if found is None:
        acl = acl_tuple(key)
        gids = set()
        for tag, qualifier, _ in acl[2]:
            if tag == 2 and acl[1] >= 0:
                gids.add(acl[1])
            elif tag == 3:
                gids.add(qualifier)
        found = _GROUP_IDS[key] = tuple(sorted(gids))  # a tuple: a frozenset of two costs 216 bytes
    return found


class PathTable:
    """Every known path's :class:`PathState`, with a child index for subtree walks
    and a group index (gid → paths whose ACL names it) for directory fan-out."""

    def __init__(self) -> None:
        self.states: dict[str, PathState] = {}
        self.children: dict[str, set[str]] = {}
        self.by_gid: dict[int, set[str]] = {}

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
            self._index(path, old, drop=True)
            self._index(path, state, drop=False)
        return old

    def _index(self, path: str, state: PathState | None, *, drop: bool) -> None:
        if state is None:
            return
        for gid in group_ids(state.acl):
            if drop:
                paths = self.by_gid.get(gid)
                if paths is not None:
                    paths.discard(path)
                    if not paths:
                        del self.by_gid[gid]
            else:
                self.by_gid.setdefault(gid, set()).add(path)

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
