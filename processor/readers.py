"""Effective readers: who can read a path, and through which ACL entry.

This follows the POSIX ACL access check (acl(5), "Access check algorithm"):
the owner is judged by the ``user_obj`` entry alone; a user named in a
``user`` entry by that entry (masked); a user matching the owning group or a
named ``group`` entry by those entries (masked), granted if any of them
grants; everyone else by ``other``. Group entries match through nesting and
primary groups, as the operating system resolves them. A principal can read a
path only if it can also traverse (``x``) every ancestor directory.

On a Samba share a path may also hold a Windows (NT) ACL (:func:`processor.state.nt_part`): Samba lets a
user read only when both the NT check (:func:`processor.nt_access.nt_readers`) and the POSIX check admit them,
so its readers are the intersection, explained by the NT ACE that admits them ("Authenticated Users
(S-1-5-11) ALLOW read, inherited"). Traverse stays the POSIX ``x`` on ancestors: Samba, like Windows with its
default bypass-traverse privilege, checks no NT traverse right, while the kernel checks ``x``. A path whose NT
ACL could not be read is judged by POSIX alone and every grant says so. A descriptor read over SMB from a server
where nothing of ours runs (``source == "smb"``) has no POSIX part: the NT check alone decides, and traverse is
everybody (bypass-traverse, Windows' default) or, where the server enforces it, whom the DACL grants traverse.

At a Samba share's path (:func:`processor.state.share_gates`) the share's door narrows both read and traverse
there (:func:`share_admits`: ``valid users``/``invalid users``, and the share ACL through the same
:func:`processor.nt_access.nt_readers`), so the traverse cache carries it to everything beneath; where several
shares serve one path, whom any of them admits. Each grant of the share's path names the share that narrowed it.

Verdicts are cached per distinct permission state (:data:`AclKey`), so a tree
of 100,000 folders sharing a handful of ACLs costs a handful of evaluations;
the cache is dropped whenever the directory changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from permwatch.events import NtAce, NtAceFlag, NtAcl
from processor.nt_access import EVERYBODY, FILE_TRAVERSE, NtGrant, map_generic, nt_readers
from processor.state import (
    TAG_NAMES,
    AclKey,
    Directory,
    PathState,
    PathTable,
    ShareGate,
    acl_tuple,
    nt_part,
    parent_of,
    share_gates,
)

READ = 4
TRAVERSE = 1
MAX_CACHED = 4096
"""Verdicts and traverse sets cached at most; each holds bitsets as wide as the directory, so an
unbounded cache over 100,000 distinct ACLs would cost gigabytes. Beyond it the cache starts afresh."""

ALL = -1
"""The bitset of everybody, for directories we know nothing about: traversal is assumed, never denied."""


@dataclass(frozen=True, slots=True)
class Via:
    """One ACL entry that grants read, as acl(5) writes it without the permissions
    (``user::``, ``user:anna``, ``group::``, ``group:alla``, ``other::``), and the people it lets read
    (before traverse and labels are applied)."""

    entry: str
    group: str | None
    user: str | None
    people: int
    ace: NtAce | None = None
    """the NT ACE that admits them, on a Samba share (see :func:`inherited_from`)"""


@dataclass(frozen=True, slots=True)
class AclVerdict:
    read: int
    traverse: int
    via: tuple[Via, ...]


class ReaderEvaluator:
    """Answers "who can read this path" against the current directory and path table."""

    def __init__(self, directory: Directory, paths: PathTable) -> None:
        self.directory = directory
        self.paths = paths
        self._verdicts: dict[AclKey, AclVerdict] = {}
        self._traverse: dict[str, int] = {}
        self._canonical: dict[int, int] = {}
        self._version = directory.version
        self.traverse_generation = 0
        """counts the times what :meth:`traverse` answers may have changed (a folder's judgement is memoised on it)"""

    def reset(self) -> None:
        """Forget cached answers (after the directory or a directory's ``x`` bits changed)."""
        self._verdicts.clear()
        self._traverse.clear()
        self._canonical.clear()
        self._version = self.directory.version
        self.traverse_generation += 1

    def forget_traverse(self) -> None:
        self._traverse.clear()
        self.traverse_generation += 1

    def verdict(self, state: PathState) -> AclVerdict:
        if self._version != self.directory.version:
            self.reset()
        found = self._verdicts.get(state.acl)
        if found is None:
            if len(self._verdicts) >= MAX_CACHED:
                self._verdicts.clear()
                self._canonical.clear()
            found = self._verdicts[state.acl] = self._share(evaluate_acl(state, self.directory))
        return found

    def _share(self, verdict: AclVerdict) -> AclVerdict:
        """Sets of people are large ints (one bit a person): keep one object per distinct set."""
        canonical = self._canonical
        via = tuple(Via(v.entry, v.group, v.user, canonical.setdefault(v.people, v.people), v.ace) for v in verdict.via)
        return AclVerdict(
            read=canonical.setdefault(verdict.read, verdict.read),
            traverse=canonical.setdefault(verdict.traverse, verdict.traverse),
            via=via,
        )

    def traverse(self, directory_path: str) -> int:
        """People who can reach inside ``directory_path``: ``x`` on it and on every ancestor."""
        if self._version != self.directory.version:
            self.reset()
        found = self._traverse.get(directory_path)
        if found is not None:  # a wide fan-out asks this for every folder: answer cached ones first
            return found
        if len(self._traverse) >= MAX_CACHED * 16:
            self._traverse.clear()
        pending: list[str] = []
        path = directory_path
        mask = ALL
        while True:
            cached = self._traverse.get(path)
            if cached is not None:
                mask = cached
                break
            pending.append(path)
            if path == "/":
                break
            path = parent_of(path)
        for p in reversed(pending):
            state = self.paths.get(p)
            if state is not None:
                narrowed = mask & self.verdict(state).traverse
                if narrowed != mask:  # most directories pass on their parent's set: keep one object for it
                    mask = self._canonical.setdefault(narrowed, narrowed)
            self._traverse[p] = mask
        return mask

    def readers(self, path: str, state: PathState) -> int:
        return self.verdict(state).read & self.traverse(parent_of(path))


def evaluate_acl(state: PathState, directory: Directory) -> AclVerdict:
    """Read and traverse bitsets of one permission state, with the entry that grants each: POSIX, and on a
    Samba share with an NT ACL of its own, only those the NT check admits too; at a share's path, only those
    its share admits."""
    verdict = _evaluate_own(state, directory)
    gates = share_gates(state.acl)
    if not gates:
        return verdict
    admitted, why = 0, []
    for gate in gates:
        people, narrowed = share_admits(gate, directory)
        admitted |= people
        why.append(f"share '{gate.name}': {', '.join(narrowed) or 'admits all'}")
    note = f" [{'; '.join(why)}]"
    via = tuple(
        Via(v.entry + (note if v.people & ~admitted else ""), v.group, v.user, v.people & admitted, v.ace)
        for v in verdict.via
        if v.people & admitted
    )
    return AclVerdict(verdict.read & admitted, verdict.traverse & admitted, via)


def share_admits(gate: ShareGate, directory: Directory) -> tuple[int, list[str]]:
    """Whom smbd lets connect to a share (everybody: ``ALL``), and what narrowed it (``valid users``, ``invalid
    users``, ``share ACL``, ``share ACL unreadable``). smbd admits a user whom ``valid users`` (when set) names,
    ``invalid users`` does not, and whose token the share ACL grants FILE_READ_DATA (a user granted write alone
    may connect but read nothing). Group entries (``@g``, ``+g``, or a plain name that is a group) count their
    members as the operating system resolves them, like a POSIX group entry."""
    people, narrowed = ALL, []
    if gate.valid_users:
        valid = 0
        for entry in gate.valid_users:
            valid |= _named(entry, gate.name, directory)
        people &= valid
        if valid != ALL:
            narrowed.append("valid users")
    invalid = 0
    for entry in gate.invalid_users:
        invalid |= _named(entry, gate.name, directory, unresolved=0)
    if invalid:
        people &= ~invalid
        narrowed.append("invalid users")
    if gate.acl is None:
        narrowed.append(f"share ACL unreadable ({gate.error}): not applied")
    else:
        allowed, _ = nt_readers(gate.acl, directory.sid_members)
        if allowed != EVERYBODY and allowed != directory.everyone():
            people &= allowed
            narrowed.append("share ACL")
    return people, narrowed


def _named(entry: str, share: str, directory: Directory, *, unresolved: int = ALL) -> int:
    """The people an smb.conf user-list entry names. A ``%`` macro other than ``%S`` (the share's name) depends
    on the connecting user and is not modelled: it names ``unresolved`` (everybody in ``valid users``, nobody in
    ``invalid users``: the side of exposure). ``&netgroup`` is NIS only and names nobody."""
    name = entry.replace("%S", share)
    if "%" in name:
        return unresolved
    if name.startswith("S-1-"):
        return directory.sid_members(name)
    if name[:1] in "@+&":
        kind, name = name[0], name[1:].rsplit("\\", 1)[-1]
        if kind == "&" or name not in directory.groups:
            return 0
        return directory.effective_members(name)
    name = name.rsplit("\\", 1)[-1]
    if name in directory.users:
        return directory.user_bit(name)
    return directory.effective_members(name) if name in directory.groups else 0


def _evaluate_own(state: PathState, directory: Directory) -> AclVerdict:
    """:func:`evaluate_acl` without the share's door."""
    nt = nt_part(state.acl)
    if nt is not None and nt.remote:
        return _over_smb(nt, directory)
    posix = evaluate_posix_acl(state, directory)
    if nt is None:
        return posix
    if nt.source != "stored":
        note = f" [NT ACL unreadable: {nt.error}; judged by POSIX alone]"
        return AclVerdict(
            posix.read, posix.traverse, tuple(Via(v.entry + note, v.group, v.user, v.people) for v in posix.via)
        )
    return _with_nt(posix, nt, directory)


def _over_smb(nt: NtAcl, directory: Directory) -> AclVerdict:
    """A descriptor read over SMB from a server whose own check is all there is: the NT check alone decides
    read, and traverse is everybody (bypass-traverse, Windows' default) or whom the DACL grants traverse."""
    everyone = directory.everyone()
    if nt.error is not None:  # unread: everybody, and every grant says why, until the collector can read it
        why = f"NT ACL unreadable over SMB ({nt.error}): everybody"
        return AclVerdict(everyone, ALL, (Via(why, None, None, everyone),))
    admitted, grants = nt_readers(nt, directory.sid_members)
    read = everyone if admitted == EVERYBODY else admitted & everyone
    if nt.bypass_traverse:
        traverse = ALL
    else:
        passing, _ = nt_readers(nt, directory.sid_members, FILE_TRAVERSE)
        traverse = everyone if passing == EVERYBODY else passing & everyone
    if nt.dacl is None:
        return AclVerdict(read, traverse, (Via("NT: no DACL, everyone", None, None, read),) if read else ())
    return AclVerdict(read, traverse, _nt_grants(nt, grants, read, directory))


def _with_nt(posix: AclVerdict, nt: NtAcl, directory: Directory) -> AclVerdict:
    admitted, grants = nt_readers(nt, directory.sid_members)
    read = posix.read & admitted
    if nt.dacl is None:  # a null DACL: every reader is one through POSIX, and says so
        vias = tuple(Via(f"{v.entry} [NT: no DACL, everyone]", v.group, v.user, v.people) for v in posix.via)
        return AclVerdict(read, posix.traverse, vias)
    return AclVerdict(read, posix.traverse, _nt_grants(nt, grants, posix.read, directory))


def _nt_grants(nt: NtAcl, grants: tuple[NtGrant, ...], within: int, directory: Directory) -> tuple[Via, ...]:
    """Each allow ACE that admits people (of ``within``), named: "Authenticated Users (S-1-5-11) ALLOW read"."""
    assert nt.dacl is not None
    via = []
    for grant in grants:
        people = grant.people & within
        if not people:
            continue
        ace = nt.dacl[grant.index]
        name = directory.name_of_sid(ace.trustee)
        who = f"{name} ({ace.trustee})" if name else ace.trustee
        how = ", inherited" if NtAceFlag.INHERITED in ace.flags else ""
        condition = ", conditional (not evaluated)" if ace.conditional else ""
        group = directory.group_of_sid(ace.trustee)
        user = name if group is None and name is not None and name in directory.users else None
        via.append(Via(f"{who} ALLOW read{how}{condition}", group, user, people, ace))
    return tuple(via)


def inherited_from(paths: PathTable, path: str, ace: NtAce) -> str | None:
    """The folder an inherited ACE of ``path`` came from: the nearest ancestor holding it (same kind, trustee
    and rights) as an inheritable ACE not itself inherited. None when the chain breaks: an ancestor unknown, or
    without that ACE (it was since removed there, or the copy was made by hand)."""
    want = (ace.type, ace.trustee, map_generic(ace.mask))
    current = path
    while current != "/":
        current = parent_of(current)
        state = paths.get(current)
        nt = nt_part(state.acl) if state is not None else None
        if nt is None or nt.dacl is None:
            return None
        source = next(
            (
                a
                for a in nt.dacl
                if (a.type, a.trustee, map_generic(a.mask)) == want
                and (NtAceFlag.OBJECT_INHERIT in a.flags or NtAceFlag.CONTAINER_INHERIT in a.flags)
            ),
            None,
        )
        if source is None:
            return None
        if NtAceFlag.INHERITED not in source.flags:
            return current
    return None


def evaluate_posix_acl(state: PathState, directory: Directory) -> AclVerdict:
    """Read and traverse bitsets of the POSIX part of a permission state, with the entry that grants each."""
    owner_uid, owning_gid, entries = acl_tuple(state.acl)[:3]
    mask_perms = next((perms for tag, _, perms in entries if TAG_NAMES[tag] == "mask"), 7)
    decided = read = traverse = 0
    via: list[Via] = []

    def grant(bits: int, perms: int, entry: str, group: str | None = None, user: str | None = None) -> None:
        nonlocal read, traverse
        if perms & READ:
            read |= bits
            if bits:
                via.append(Via(entry, group, user, bits))
        if perms & TRAVERSE:
            traverse |= bits

    by_tag: dict[str, list[tuple[int, int]]] = {}
    for tag, qualifier, perms in entries:
        by_tag.setdefault(TAG_NAMES[tag].value, []).append((qualifier, perms))

    for _, perms in by_tag.get("user_obj", ()):
        if owner_uid >= 0:
            owner = directory.user_for_uid(owner_uid, state.owner_name)
            bits = 0 if owner.disabled else owner.bit
            decided |= bits
            grant(bits, perms, "user::", user=owner.name)
    for uid, perms in by_tag.get("user", ()):
        user = directory.user_for_uid(uid, state.name_of(1, uid))
        bits = 0 if user.disabled else user.bit & ~decided
        decided |= bits
        effective = perms & mask_perms
        grant(bits, effective, f"user:{user.name}", user=user.name)

    matched = 0
    group_entries = [(owning_gid, perms, True) for _, perms in by_tag.get("group_obj", ())]
    group_entries += [(gid, perms, False) for gid, perms in by_tag.get("group", ())]
    for gid, perms, owning in group_entries:
        name = directory.group_for_gid(gid) if gid >= 0 else None
        hint = state.group_name if owning else state.name_of(3, gid)
        label = name or hint or f"gid:{gid}"
        bits = (directory.gid_members(gid) if gid >= 0 else 0) & ~decided
        matched |= bits
        effective = perms & mask_perms
        grant(bits, effective, "group::" if owning else f"group:{label}", group=name)
    decided |= matched

    for _, perms in by_tag.get("other", ()):
        grant(directory.everyone() & ~decided, perms, "other::")
    return AclVerdict(read=read, traverse=traverse, via=tuple(via))
