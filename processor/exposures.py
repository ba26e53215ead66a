"""Exposures of labelled folders: opened, changed, closed.

A labelled folder owns every path beneath it (up to the next labelled
folder). For each such path the outsiders are its effective readers minus
the label's audience, and the folder's exposure is the union over its paths.

Paths are not judged one by one. A folder keeps its paths grouped by
*signature*, (permission state, parent directory, file or not): every path
in a group has the same readers, because it has the same ACL and the same
ancestors. Judging a folder costs one evaluation per distinct signature, so a
share of 20,000 folders reset to the same ACL is a few hundred signatures, and
a directory change that moves traverse bits or group memberships needs no
walk over the paths at all, only a fresh look at the signatures.

The audience rule lives here (:func:`audience`): a user may read when listed,
when a direct member of an allowed group, or when its primary group is
allowed. A group nested into an allowed group is *not* allowed unless listed.
An exposure is of *contents* when an outsider can read a file or enter a
folder they can list (``r-x``: ``ls -l`` shows sizes, owners and times), and of
*names* when they can only list folders without entering them (``r`` without
``x`` on a directory they can reach, so ``ls`` works and ``ls -l`` does not):
the names may identify clients, so it is an exposure too, of another kind.
"""

from __future__ import annotations

import heapq
import logging
from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import Field

from permwatch.events import (
    ActorConfidence,
    ExposureEvent,
    ExposureKind,
    ExposureStatus,
    Grant,
    Label,
    ObjectType,
    exposure_event_id,
    exposure_id_for,
)
from permwatch.wire import constants_of, unchecked
from processor.readers import ReaderEvaluator, inherited_from
from processor.state import AclKey, Directory, PathState, popcount

log = logging.getLogger("permwatch.processor")

MAX_SAMPLE_PATHS = 5
SAMPLE_KEPT = 64
"""paths a folder keeps in sort order per signature of many (:meth:`FolderExposure.sample`), up to twice that"""
_INHERITED = ", inherited"
"""how an NT grant ends whose ACE was inherited (:func:`processor.readers._nt_grants`)"""
MAX_USERS_LISTED = 200
"""Default bound on the names an exposure record lists (``processor.max_users_listed``); the workshop has them all."""
MAX_CAUSES = 10
MAX_JUDGED = 4096  # cached judgements hold people bitsets; past this the cache starts afresh

Signature = tuple[AclKey, str, ObjectType]
"""(permission state, parent directory, object type): paths that share it have the same readers, and give the
same kind of exposure: a file's contents, a directory's names (or more, when its readers may enter it)."""
CONTENTS_TYPES = frozenset({ObjectType.FILE, ObjectType.OTHER})
"""Reading these reads contents; reading a directory lists names, and a symlink's target is another path."""
GrantKey = tuple[str, str | None, tuple[str, ...], str | None]
Shape = tuple[int, tuple[Grant, ...]]
Paths = tuple[int, tuple[str, ...]]
"""(how many paths outsiders can read, the first few of them in sort order)"""


def audience(label: Label, directory: Directory) -> int:
    """The people the label allows: listed users, direct members and primary-group members of listed groups."""
    mask = 0
    for name in label.allowed_users:
        mask |= directory.user_bit(name)
    for group in label.allowed_groups:
        mask |= directory.direct_members(group)
    return mask


@dataclass
class Cause:
    """The events that moved a folder in one batch: the first opens an exposure, the last closes one."""

    event_ids: list[str]
    first_at: datetime
    last_at: datetime
    actor: str | None = None
    _ids: tuple[str, ...] | None = field(default=None, repr=False, compare=False)
    # -- who changed it (#18)
    actor_confidence: ActorConfidence | None = None
    """how sure the collector was of ``actor`` (an Actor's confidence), for the latest cause that named one"""
    actor_unresolved: int = 0
    """filesystem events among the causes whose actor the collector could not resolve"""
    _last_counted: str | None = field(default=None, repr=False, compare=False)
    # -- respond (#19)
    preexisting: bool = False
    """every event of it is of a first baseline scan (or the directory's first snapshot): nothing was seen change"""

    def attribute(self, event_id: str, actor: str | None, confidence: ActorConfidence | None) -> None:
        """Note one cause event's actor and confidence (counted once per event, however often it touches)."""
        if event_id == self._last_counted:
            return
        self._last_counted = event_id
        if confidence == "unresolved":
            self.actor_unresolved += 1
        elif actor is not None:
            self.actor, self.actor_confidence = actor, confidence

    @property
    def ids(self) -> tuple[str, ...]:
        # a directory change's cause is shared by every folder it touches: build the tuple once
        if self._ids is None or len(self._ids) != len(self.event_ids):
            self._ids = tuple(self.event_ids)
        return self._ids

    def add(self, event_id: str, at: datetime, actor: str | None, preexisting: bool = False) -> None:
        self.preexisting = self.preexisting and preexisting
        if len(self.event_ids) < MAX_CAUSES:
            self.event_ids.append(event_id)
        self.last_at = max(self.last_at, at)
        self.actor = actor or self.actor


class Verdict(ExposureEvent):
    """The engine's decision about one folder: the contract's exposure event itself, with every outsider's name
    beside it (``all_users``, for the workshop commands; never on the wire, where ``users`` is cut).

    Built by :func:`permwatch.wire.unchecked` from values valid by construction, so judging 100,000 folders
    does not pay for validating 100,000 models; :meth:`to_event` validates the wire event.
    """

    all_users: tuple[str, ...] = Field(default=(), exclude=True)
    """every outsider by name, sorted"""

    def to_event(self) -> ExposureEvent:
        return ExposureEvent(**{name: getattr(self, name) for name in _EXPOSURE_FIELDS})


_EXPOSURE_FIELDS = tuple(ExposureEvent.model_fields)
_SCHEMA_VERSION, _EXPOSURE_TYPE = constants_of(Verdict).values()


@dataclass(frozen=True, slots=True, eq=False)
class Judged:
    """The outsiders one (permission state, traverse set, audience) lets read, and the grants."""

    reach: int
    grant_masks: tuple[tuple[GrantKey, int], ...]
    grants: tuple[Grant, ...]
    enters: bool
    """whether an outsider it lets read may also enter (``x``): for a directory, ``ls -l`` and not only ``ls``"""


def exposes_contents(signature: Signature, judged: Judged) -> bool:
    """Whether the outsiders ``judged`` lets read the paths of ``signature`` read more than names: a file's
    contents, or a directory they may enter too (``r-x``). A directory read without ``x`` gives names only."""
    object_type = signature[2]
    return object_type in CONTENTS_TYPES or (object_type == ObjectType.DIRECTORY and judged.enters)


def _grant_models(items: Iterable[tuple[GrantKey, int]]) -> tuple[Grant, ...]:
    return tuple(
        sorted(
            (
                Grant(entry=entry, group=group, chain=chain, user=user, people=popcount(mask))
                for (entry, group, chain, user), mask in items
            ),
            key=lambda g: (-g.people, g.entry, g.group or "", g.user or ""),
        )
    )


@dataclass(slots=True)
class OpenExposure:
    exposure_id: str
    sequence: int
    opened_at: datetime
    shape: Shape | None
    """the outsiders and grants last emitted; None while ``published`` stands for them (see :meth:`adopt`)"""
    actor: str | None
    published: ExposureEvent | None = None
    """the event a restart took over from the record, until a judgement has compared the folder with it"""
    paths: Paths = (0, ())
    """the ``paths_affected`` and ``sample_paths`` last emitted"""
    kind: ExposureKind = ExposureKind.CONTENTS
    """the kind last emitted"""
    contents_seen: bool = False
    """whether any event of this exposure was of contents: its close says so"""
    actor_unresolved: int = 0
    """cause events of this exposure so far whose actor the collector could not resolve (#18)"""
    preexisting: bool = False
    """opened by a first baseline scan: every event of it says so"""


@dataclass(slots=True)
class FolderExposure:
    """One labelled folder: its label, its paths grouped by signature, and its open exposure."""

    folder: str
    label: Label
    groups: dict[Signature, str | set[str]] = field(default_factory=dict)
    """signature → its paths: the path itself while it is the only one (a set costs 216 bytes more)"""
    states: dict[AclKey, PathState] = field(default_factory=dict)
    open: OpenExposure | None = None
    allowed: int = 0
    allowed_version: int = -1
    past_ids: set[str] | None = None
    """every exposure id this folder has had (on the record or emitted): a new episode never reuses one"""
    samples: dict[Signature, list[str]] = field(default_factory=dict)
    """signature of many paths → the first of its paths in sort order, sorted: every member up to the last one
    listed, at least ``MAX_SAMPLE_PATHS`` of them (see :meth:`sample`). Kept up to date as paths move, so a
    folder judged after every change of one path among thousands does not sort them each time."""
    layout: int = 0
    """counts changes to which signatures the folder has (or the state standing for one): its judgement depends on
    them, not on which paths each holds (see :meth:`ExposureTracker.shape`)"""
    shaped: tuple[tuple[int, int, int, int], tuple[Shape, list[Signature], ExposureKind]] | None = None
    """(directory version, traverse generation, audience, layout) → the folder's shape judged then"""

    def adopt(self, last: ExposureEvent | None, ids: Iterable[str], contents: Collection[str] = ()) -> bool:
        """Take the record's ``last`` event for this folder as what was emitted, and its ``ids`` as used.

        The outsiders, grants, paths and kind the event stands for are compared with the folder at its next judgement
        (the folder's paths may not all be known yet), which continues the exposure under its published id
        and sequence: a change if they differ, a close if nobody outside reads any more. True if an
        exposure is open on the record. ``contents``: exposure ids the record shows were ever of contents.
        """
        self.past_ids = set(ids)  # what a rebuild emitted was never published: the record's ids alone
        if last is None or last.status is ExposureStatus.CLOSED:
            self.open = None  # closed on the record (or never opened): anything open now is new
            return False
        self.open = OpenExposure(last.exposure_id, last.sequence, last.opened_at, None, last.actor, last)
        self.open.kind = last.kind
        self.open.actor_unresolved = last.actor_unresolved  # the count so far goes on after a restart (#18)
        self.open.contents_seen = last.kind is ExposureKind.CONTENTS or last.exposure_id in contents
        self.open.preexisting = last.preexisting
        self.past_ids.add(last.exposure_id)
        return True

    def new_exposure_id(self, cause: Cause) -> str:
        """An id for an episode opening now: derived from its cause, never one this folder has had."""
        used = self.past_ids
        if used is None:
            used = self.past_ids = set()
        for event_id in cause.event_ids:
            exposure_id = exposure_id_for(self.folder, self.label.name, event_id)
            if exposure_id not in used:
                break
        else:  # every cause opened an earlier episode (a close and a reopening judged from the same events)
            n = len(used)
            while (exposure_id := exposure_id_for(self.folder, self.label.name, f"{cause.event_ids[0]}#{n}")) in used:
                n += 1
        used.add(exposure_id)
        return exposure_id

    def set_path(self, path: str, state: PathState | None, parent: str, old: PathState | None) -> None:
        """Move ``path`` from the signature of its ``old`` state (the caller knows it: no reverse index,
        which would cost a dict entry per path) to that of ``state``; ``None`` for none."""
        if old is not None:
            before = (old.acl, parent, old.object_type)
            members = self.groups.get(before)
            if members == path:
                del self.groups[before]
                self.layout += 1
            elif isinstance(members, set):
                members.discard(path)
                if len(members) == 1:
                    self.groups[before] = next(iter(members))
                if self.samples:
                    self._sample_without(before, path)
        if state is not None:
            signature = (state.acl, parent, state.object_type)
            found = self.groups.get(signature)
            if found is None:
                self.groups[signature] = path
                self.layout += 1
            elif isinstance(found, str):
                self.groups[signature] = {found, path}
            else:
                found.add(path)
                if self.samples:
                    self._sample_with(signature, path)
            if self.states.get(state.acl) is not state:
                self.states[state.acl] = state
                self.layout += 1

    def clear_paths(self) -> None:
        self.groups.clear()
        self.states.clear()
        self.samples.clear()
        self.layout += 1

    def sample(self, signature: Signature, members: set[str]) -> list[str]:
        """The first ``MAX_SAMPLE_PATHS`` of ``members`` (the paths of ``signature``, more than that many) in sort
        order, from the sorted sample kept for it, made when first asked (``SAMPLE_KEPT`` of them)."""
        kept = self.samples.get(signature)
        if kept is None:
            kept = self.samples[signature] = heapq.nsmallest(SAMPLE_KEPT, members)
        return kept[:MAX_SAMPLE_PATHS]

    def _sample_without(self, signature: Signature, path: str) -> None:
        kept = self.samples.get(signature)
        if kept is None:
            return
        at = bisect_left(kept, path)
        if at < len(kept) and kept[at] == path:
            del kept[at]
            if len(kept) < MAX_SAMPLE_PATHS:  # too few left to answer for the rest (always so once the members
                del self.samples[signature]  # are that few: it holds only members): made again when asked

    def _sample_with(self, signature: Signature, path: str) -> None:
        kept = self.samples.get(signature)
        if kept is None:
            return
        if path < kept[-1]:  # (after its last: it still holds every member up to its last)
            insort(kept, path)
            if len(kept) > 2 * SAMPLE_KEPT:
                del kept[SAMPLE_KEPT:]  # what it drops lies after what it keeps: still every member up to its last


_NO_PATHS: Paths = (0, ())
CONTENTS, NAMES = ExposureKind.CONTENTS, ExposureKind.NAMES


class ExposureTracker:
    """Judges folders against their labels and emits exposure events on transitions."""

    def __init__(
        self,
        directory: Directory,
        evaluator: ReaderEvaluator,
        *,
        source: str,
        clock: Callable[[], datetime],
        max_users_listed: int = MAX_USERS_LISTED,
    ) -> None:
        self.directory = directory
        self.max_users_listed = max_users_listed
        """how many outsiders a record names at most; every one of them is in the verdict's ``all_users``"""
        self.evaluator = evaluator
        self.source = source
        self.clock = clock
        self.folders: dict[str, FolderExposure] = {}
        self._memo_version = -1
        self._labels: dict[Label, Label] = {}
        """one object per distinct label, so 100,000 folders under 1,000 labels share 1,000"""
        self._allowed: dict[int, tuple[Label, int]] = {}
        """id of a label → (the label, its audience)"""
        self._judged: dict[tuple[AclKey, int, int], Judged] = {}
        self._names: dict[int, tuple[tuple[str, ...], tuple[str, ...], bool]] = {}
        """outsiders → (every name, the names a record lists, whether that list is cut)"""
        self._groups_of: dict[int, tuple[tuple[Grant, ...], tuple[str, ...]]] = {}
        self._inheriting: dict[int, tuple[tuple[Grant, ...], bool]] = {}
        """id of a grants tuple → (it, whether an NT grant in it was inherited)"""
        self.now: datetime | None = None
        """The detection time of the batch being judged (one clock read per flush)."""
        self.contents_ids: set[str] = set()
        """exposure ids the record a restart read shows were ever of contents"""
        self.unadopted: dict[str, tuple[ExposureEvent | None, set[str]]] = {}
        """folder → its record (last event, ids) from a restart, for folders not labelled yet when it was read"""

    def _memos(self) -> None:
        """Memos keyed on people are good until the directory changes."""
        if self._memo_version != self.directory.version:
            self._allowed.clear()
            self._judged.clear()
            self._names.clear()
            self._groups_of.clear()
            self._inheriting.clear()
            self._memo_version = self.directory.version

    def set_label(self, folder: str, label: Label) -> FolderExposure:
        label = self._labels.setdefault(label, label)
        record = self.folders.get(folder)
        if record is None:
            record = self.folders[folder] = FolderExposure(folder, label)
            waiting = self.unadopted.pop(folder, None)
            if waiting is not None:  # labelled after the restart that read the record: take it over now
                record.adopt(*waiting, self.contents_ids)
        else:
            record.label = label
            record.allowed_version = -1
        return record

    def drop(self, folder: str) -> None:
        self.folders.pop(folder, None)

    def allowed(self, label: Label) -> int:
        """The people ``label`` allows, memoised by the label object (records share one per distinct label)."""
        self._memos()
        found = self._allowed.get(id(label))
        if found is None or found[0] is not label:
            found = self._allowed[id(label)] = (label, audience(label, self.directory))
        return found[1]

    # ------------------------------------------------------------ judging

    def shape(self, record: FolderExposure) -> tuple[Shape, list[Signature], ExposureKind]:
        """The outsiders (a bitset), the grants that let them read, the signatures that expose, and the kind:
        contents if any of them exposes more than names (:func:`exposes_contents`).

        Memoised per folder: it depends on the folder's signatures and their states, the directory, the traverse
        sets and the audience, not on which paths each signature holds; a change that moves a path between
        signatures the folder already has (most changes, and each of a replay's) is not judged again.
        The value returned is shared: callers do not change it."""
        if self._memo_version != self.directory.version:
            self._memos()
        if record.allowed_version != self._memo_version:
            record.allowed = self.allowed(record.label)
            record.allowed_version = self._memo_version
        key = (self._memo_version, self.evaluator.traverse_generation, record.allowed, record.layout)
        shaped = record.shaped
        if shaped is not None and shaped[0] == key:
            return shaped[1]
        found = self.judge_shape(record)
        record.shaped = (key, found)
        return found

    def judge_shape(self, record: FolderExposure) -> tuple[Shape, list[Signature], ExposureKind]:
        """:meth:`shape` judged afresh (signature by signature, through the judgement cache)."""
        allowed = self.allowed(record.label)
        traverse_of = self.evaluator.traverse
        judged = self._judged
        if len(record.groups) == 1:  # the common case, and the whole cost of a wide fan-out
            for signature in record.groups:
                acl, parent, _ = signature
                key = (acl, traverse_of(parent), allowed)
                one = judged.get(key)
                if one is None:
                    if len(judged) >= MAX_JUDGED:
                        judged.clear()
                    one = judged[key] = self._judge(record.states[acl], key[1], allowed)
                if one.reach:
                    return (one.reach, one.grants), [signature], CONTENTS if exposes_contents(signature, one) else NAMES
            return (0, ()), [], NAMES
        outsiders = 0
        exposing: list[Signature] = []
        found: list[Judged] = []
        kind = NAMES
        for signature in record.groups:
            acl, parent, _ = signature
            key = (acl, traverse_of(parent), allowed)
            hit = judged.get(key)
            if hit is None:
                if len(judged) >= MAX_JUDGED:
                    judged.clear()
                hit = judged[key] = self._judge(record.states[acl], key[1], allowed)
            if hit.reach:
                outsiders |= hit.reach
                exposing.append(signature)
                found.append(hit)
                if kind is NAMES and exposes_contents(signature, hit):
                    kind = CONTENTS
        if not found:
            return (0, ()), exposing, NAMES
        if len(found) == 1 or all(j is found[0] for j in found):
            return (outsiders, found[0].grants), exposing, kind
        by_key: dict[GrantKey, int] = {}
        for distinct in dict.fromkeys(found):
            for grant_key, mask in distinct.grant_masks:
                by_key[grant_key] = by_key.get(grant_key, 0) | mask
        return (outsiders, _grant_models(by_key.items())), exposing, kind

    def _judge(self, state: PathState, traverse: int, allowed: int) -> Judged:
        """Who outside the label can read a path of this state under this traverse set, and through what."""
        verdict = self.evaluator.verdict(state)
        reach = verdict.read & traverse & ~allowed
        grants: list[tuple[GrantKey, int]] = []
        for via in verdict.via:
            hit = via.people & reach
            if not hit:
                continue
            if via.group is None:
                grants.append(((via.entry, None, (), via.user), hit))
                continue
            for nested in self.directory.nested_groups(via.group):
                direct = self.directory.direct_members(nested) & hit
                if direct:
                    grants.append(((via.entry, nested, self.directory.chain(via.group, nested), None), direct))
                    hit &= ~direct
        masks = tuple(grants)
        return Judged(reach, masks, _grant_models(masks), bool(reach & verdict.traverse))

    def transition(self, record: FolderExposure, cause: Cause) -> Verdict | None:
        """Compare the folder's exposure with what was last emitted; return the event, if any.

        An open exposure is changed when who can read, through which grants, or which paths
        (their count or the sample) differ from what it last said: a record always says what is true.
        """
        (outsiders, grants), exposing, kind = self.shape(record)
        current = record.open
        paths: Paths
        if outsiders:
            # inline for the common case of one exposing path: this runs once per judged folder
            if len(exposing) == 1 and isinstance(only := record.groups[exposing[0]], str):
                paths = (1, (only,))
            else:
                paths = self.paths(record, exposing)
        else:
            paths = _NO_PATHS
        if current is not None:
            current.actor_unresolved += cause.actor_unresolved
        if current is not None and current.shape is None and current.published is not None:
            if self._published_as(current.published, outsiders, grants, paths, kind):
                current.shape, current.paths = (outsiders, grants), paths
                # said once per exposure a restart took over: nothing to publish, but an operator (and a test)
                # can see that the rebuild agrees with what was published
                log.info("exposure %s continued as published: %s", current.exposure_id, record.folder)
            current.published = None
        if not outsiders:
            if current is None:
                return None
            record.open = None
            current.sequence += 1
            duration = max(0.0, (cause.last_at - current.opened_at).total_seconds())
            widest = CONTENTS if current.contents_seen else NAMES
            return self._event(
                record,
                current,
                ExposureStatus.CLOSED,
                widest,
                0,
                (),
                _NO_PATHS,
                cause,
                closed_at=cause.last_at,
                duration=duration,
            )
        if current is None:
            exposure_id = record.new_exposure_id(cause)
            current = record.open = OpenExposure(
                exposure_id,
                0,
                cause.first_at,
                (outsiders, grants),
                cause.actor,
                None,
                paths,
                kind,
                kind is CONTENTS,
                preexisting=cause.preexisting,
            )
            current.actor_unresolved = cause.actor_unresolved
            return self._event(record, current, ExposureStatus.OPENED, kind, outsiders, grants, paths, cause)
        if current.shape == (outsiders, grants) and current.paths == paths and current.kind is kind:
            return None
        current.sequence += 1
        current.shape, current.paths, current.kind = (outsiders, grants), paths, kind
        current.contents_seen = current.contents_seen or kind is CONTENTS
        return self._event(record, current, ExposureStatus.CHANGED, kind, outsiders, grants, paths, cause)

    def restate(self, record: FolderExposure, cause: Cause) -> Verdict | None:
        """The folder's open exposure said again as a ``changed`` event (an approval ran out: the SOC must hear
        that it is still open); whatever changed meanwhile is in it. None when nothing is open."""
        verdict = self.transition(record, cause)
        current = record.open
        if verdict is not None or current is None or current.shape is None:
            return verdict
        current.sequence += 1
        outsiders, grants = current.shape
        return self._event(
            record, current, ExposureStatus.CHANGED, current.kind, outsiders, grants, current.paths, cause
        )

    def _published_as(
        self, event: ExposureEvent, outsiders: int, grants: tuple[Grant, ...], paths: Paths, kind: ExposureKind
    ) -> bool:
        """Whether ``event`` says what (outsiders, grants, paths, kind) would say, in every respect it publishes."""
        return (
            event.kind is kind
            and event.people == outsiders.bit_count()
            and event.grants == self._explained(event.folder, grants, paths)
            and (event.users, event.users_truncated) == self._listed(outsiders)
            and (event.paths_affected, event.sample_paths) == paths
        )

    def _explained(self, folder: str, grants: tuple[Grant, ...], paths: Paths) -> tuple[Grant, ...]:
        """``grants`` as the record says them: an NT ACE inherited names the folder it came from ("Authenticated
        Users (S-1-5-11) ALLOW read, inherited from /srv/share/socialkontoret"), found from the folder itself or
        else the first exposing path holding it (:func:`processor.readers.inherited_from`). Only NT grants pay."""
        found = self._inheriting.get(id(grants))
        if found is None or found[0] is not grants:  # asked once per verdict: remembered per grants tuple
            if len(self._inheriting) >= MAX_JUDGED:
                self._inheriting.clear()
            found = self._inheriting[id(grants)] = (grants, any(g.entry.endswith(_INHERITED) for g in grants))
        if not found[1]:
            return grants
        return tuple(self._origin_of(grant, (folder, *paths[1])) for grant in grants)

    def _origin_of(self, grant: Grant, places: tuple[str, ...]) -> Grant:
        """``grant`` naming the folder its inherited ACE came from. The ACE is the one the grant's own ``Via``
        carries (``Via.ace``) at the first of ``places`` whose verdict gave the grant (the verdict is cached), so
        another ACE of the same trustee (a deny, or one that admits no reader) is never taken for it."""
        if not grant.entry.endswith(_INHERITED):
            return grant
        table = self.evaluator.paths
        for place in places:
            state = table.get(place)
            for via in self.evaluator.verdict(state).via if state is not None else ():
                if via.ace is not None and via.entry == grant.entry:
                    origin = inherited_from(table, place, via.ace)
                    if origin is not None:
                        return grant.model_copy(update={"entry": f"{grant.entry} from {origin}"})
        return grant

    @staticmethod
    def paths(record: FolderExposure, exposing: list[Signature]) -> Paths:
        """How many of the folder's paths the ``exposing`` signatures hold, and the first few in sort order."""
        if len(exposing) == 1:
            only = record.groups[exposing[0]]
            if isinstance(only, str):
                return 1, (only,)
            if len(only) <= MAX_SAMPLE_PATHS:
                return len(only), tuple(sorted(only))
            return len(only), tuple(record.sample(exposing[0], only))
        count, firsts = 0, []
        for signature in exposing:  # the first few of all are among the first few of each
            members = record.groups[signature]
            if isinstance(members, str):
                count += 1
                firsts.append(members)
            else:
                count += len(members)
                firsts += members if len(members) <= MAX_SAMPLE_PATHS else record.sample(signature, members)
        return count, tuple(heapq.nsmallest(MAX_SAMPLE_PATHS, firsts))

    def group_names(self, grants: tuple[Grant, ...]) -> tuple[str, ...]:
        found = self._groups_of.get(id(grants))
        if found is None or found[0] is not grants:
            found = self._groups_of[id(grants)] = (grants, tuple(sorted({g.group for g in grants if g.group})))
        return found[1]

    def _names_of(self, outsiders: int) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
        """Every outsider's name, sorted, the first ``max_users_listed`` of them, and whether that cuts the list."""
        found = self._names.get(outsiders)
        if found is None:
            every = tuple(sorted(self.directory.names(outsiders)))
            cut = len(every) > self.max_users_listed
            found = self._names[outsiders] = (every, every[: self.max_users_listed] if cut else every, cut)
        return found

    def _listed(self, outsiders: int) -> tuple[tuple[str, ...], bool]:
        """The names a record lists, and whether that list is cut."""
        _, listed, cut = self._names_of(outsiders)
        return listed, cut

    def _event(
        self,
        record: FolderExposure,
        current: OpenExposure,
        status: ExposureStatus,
        kind: ExposureKind,
        outsiders: int,
        grants: tuple[Grant, ...],
        paths: Paths,
        cause: Cause,
        *,
        closed_at: datetime | None = None,
        duration: float | None = None,
    ) -> Verdict:
        every, listed, cut = self._names_of(outsiders)
        return unchecked(
            Verdict,
            {
                # in the model's field order, which is the order it serialises in
                "schema_version": _SCHEMA_VERSION,
                "event_id": exposure_event_id(current.exposure_id, current.sequence),
                "observed_at": cause.last_at,
                "source": self.source,
                "type": _EXPOSURE_TYPE,
                "exposure_id": current.exposure_id,
                "sequence": current.sequence,
                "status": status,
                "kind": kind,
                "folder": record.folder,
                "label": record.label,
                "people": outsiders.bit_count(),
                "groups": self.group_names(grants),
                "users": listed,
                "users_truncated": cut,
                "grants": self._explained(record.folder, grants, paths),
                "paths_affected": paths[0],
                "sample_paths": paths[1],
                "cause_event_ids": cause.ids,
                "actor": cause.actor,  # who made this change; the opener stays on the opening event
                "opened_at": current.opened_at,
                "closed_at": closed_at,
                "duration_seconds": duration,
                "detected_at": self.now or self.clock(),
                "actor_confidence": cause.actor_confidence if cause.actor is not None else None,  # (#18)
                "actor_unresolved": current.actor_unresolved,
                "approval": None,  # respond (#19): set by processor.decisions
                "preexisting": current.preexisting,
                "all_users": every,
            },
        )
