"""The processor's core: apply input events in order, then judge what they touched.

Pure and synchronous, no bus. :meth:`Engine.apply` updates state and notes
which labelled folders an event touched (and why); :meth:`Engine.flush`
judges each touched folder once and returns the exposure events. The runner
flushes after every batch it reads, so a burst of 100,000 ACL changes under
one labelled folder costs one judgement of that folder per batch, not
100,000. The same events flushed at the same points give the same exposures
with the same ids, which is what makes restarts and replays agree.

Which folders an event touches:
- a path's permission change: its labelled folder; if the path is a
  directory whose traverse bits changed, every labelled folder beneath it;
- a label change: the folder, and the folder that governed it before;
- a Samba share's change (``smb.share``): like a permission change of the share's path, whose state holds it;
- a group's membership change: the folders whose paths (or ancestors) name
  that group or any group it is nested into, through the path table's group
  index, and the folders whose label allows the group (see
  :meth:`Engine.folders_depending_on`); any other directory change: all.
"""

from __future__ import annotations

import gc
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from sys import intern

from permwatch.events import (
    AclTag,
    Actor,
    AnyEvent,
    Decision,
    DirectoryGroup,
    DirectoryUser,
    ExposureStatus,
    FsBatch,
    FsKind,
    FsPermissionEvent,
    LabelAssigned,
    NtAcl,
    ObjectType,
    SambaShare,
    ScanCompleted,
    utcnow,
)
from processor.decisions import DecisionBook
from processor.exposures import MAX_USERS_LISTED, Cause, ExposureTracker, FolderExposure, Verdict
from processor.gcpause import gc_paused
from processor.published import PublishedRecord
from processor.readers import ReaderEvaluator
from processor.state import Directory, PathState, PathTable, ShareGate, gated, parent_of, path_state


class Engine:
    def __init__(
        self,
        *,
        source: str = "processor",
        clock: Callable[[], datetime] = utcnow,
        max_users_listed: int = MAX_USERS_LISTED,
    ) -> None:
        self.directory = Directory()
        self.paths = PathTable()
        self.evaluator = ReaderEvaluator(self.directory, self.paths)
        self.tracker = ExposureTracker(
            self.directory, self.evaluator, source=source, clock=clock, max_users_listed=max_users_listed
        )
        self._source, self._clock = source, clock
        self.last_directory_change: tuple[str, datetime, str | None] | None = None
        """The id, time and actor of the latest directory event applied (a reconciliation's likely cause)."""
        self.labels: dict[str, str] = {}
        self._labelled_sorted: list[str] = []
        self._allowing: dict[str, set[str]] = {}
        """group name → labelled folders whose label allows it directly"""
        self._touched: dict[str, Cause] = {}
        self._directory_cause: Cause | None = None
        self._changed_groups: set[str] = set()
        self._judge_all = False
        self._closing: list[tuple[FolderExposure, Cause]] = []
        self.folders_judged = 0
        # -- respond (issue 19)
        self.decisions = DecisionBook()
        """approvals in force, from the ``decisions`` topic"""
        self.awaiting_scan: set[str] = set()
        """folders whose open exposure a restart took from the ledger only (the log lost it): not judged until a
        whole scan of their root is on the input, so a scan read in batches cannot close and reopen them"""
        self.scanned_roots: dict[str, datetime] = {}
        """root → when its first baseline scan completed: what that scan found (observed until then) pre-exists"""
        self.shares: dict[str, tuple[str, ShareGate]] = {}
        """Samba share name → (its path, its door) (issue 16): folded into the path's state, see `_apply_share`"""

    # ------------------------------------------------------------ entry points

    def apply(self, event: AnyEvent) -> None:
        if isinstance(event, DirectoryUser | DirectoryGroup):
            self._apply_directory(event)
        elif isinstance(event, FsPermissionEvent):
            self._apply_fs(event)
        elif isinstance(event, FsBatch):
            for one in event.events:
                self._apply_fs(one)
        elif isinstance(event, LabelAssigned):
            self._apply_label(event)
        elif isinstance(event, Decision):
            self.decisions.apply(event, self._readers_of(event.folder))
        elif isinstance(event, SambaShare):
            self._apply_share(event)
        elif isinstance(event, ScanCompleted):
            if self.awaiting_scan:
                self._scan_done(event)
            if event.reason == "baseline":
                self.scanned_roots.setdefault(event.root, event.observed_at)

    def flush(self) -> list[Verdict]:
        """Judge every folder touched since the last flush, in path order; return the transitions."""
        # Judging allocates many short-lived, acyclic objects; the cyclic collector would walk the
        # whole (large, long-lived) state again and again meanwhile, for nothing.
        if not gc.isenabled():  # a replay pauses it for the whole run: no context manager per record
            return self._marked(self._judge_touched())
        with gc_paused():
            return self._marked(self._judge_touched())

    def _marked(self, verdicts: list[Verdict]) -> list[Verdict]:
        """``verdicts`` with the approval in force on each (see :mod:`processor.decisions`)."""
        if self.decisions.approvals:
            return [self.decisions.mark(verdict) for verdict in verdicts]
        return verdicts

    def _readers_of(self, folder: str) -> tuple[frozenset[str], frozenset[str]] | None:
        """The (groups, people) that read the folder's open exposure now, if one is open.

        Not checked against the decision's exposure id: a processor rebuilding from history may hold the
        folder's exposure under another id until it adopts the record, and what can read at the decision's
        place in the history is what was approved either way (an approval of a closed id marks nothing).
        """
        record = self.tracker.folders.get(folder)
        current = record.open if record is not None else None
        if current is None:
            return None
        if current.shape is None:
            if current.published is None:
                return None
            return frozenset(current.published.groups), frozenset(current.published.users)
        outsiders, grants = current.shape
        return frozenset(self.tracker.group_names(grants)), frozenset(self.directory.names(outsiders))

    def expire_approvals(self, now: datetime) -> list[Verdict]:
        """The open exposures whose approval ran out by ``now``, each restated once (``processor/decisions.py``)."""
        out = []
        self.tracker.now = now
        for exposure_id, folder in self.decisions.expired(now):
            record = self.tracker.folders.get(folder)
            if record is None or record.open is None or record.open.exposure_id != exposure_id:
                continue  # closed meanwhile, or not this processor's to say
            verdict = self.tracker.restate(record, Cause([f"expiry.{exposure_id}"], now, now))
            if verdict is not None:
                out.append(verdict)
        return out

    def first_scan_pending(self, path: str, at: datetime) -> bool:
        """Whether something seen of ``path`` at ``at`` is what the first scan of its root found: no root holding
        it had completed its first scan by then. By the events' own times, not their arrival: on Kafka the scan's
        completion (keyed by the root) may be read before the last of its batches (keyed by unit)."""
        return not any(
            at > completed and (path == root or path.startswith(root.rstrip("/") + "/"))
            for root, completed in self.scanned_roots.items()
        )

    def _judge_touched(self) -> list[Verdict]:
        directory_cause = self._directory_cause
        if directory_cause is not None:
            folders = set(self.tracker.folders) if self._judge_all else self.folders_depending_on(self._changed_groups)
            touched_before = self._touched
            # one shared cause for every folder the change reaches: nothing mutates it after this point
            self._touched = dict.fromkeys(folders, directory_cause)
            for folder, found in touched_before.items():
                if folder in self._touched:
                    for event_id in directory_cause.event_ids:
                        found.add(event_id, directory_cause.last_at, directory_cause.actor, directory_cause.preexisting)
                self._touched[folder] = found
            self._directory_cause = None
            self._changed_groups = set()
            self._judge_all = False
        self.tracker.now = self.tracker.clock()
        out = []
        for closing, cause in self._closing:
            closed = self.tracker.transition(closing, cause)
            if closed is not None:
                out.append(closed)
        self._closing = []
        touched, self._touched = self._touched, {}
        records = self.tracker.folders
        transition = self.tracker.transition
        for folder in self._in_path_order(touched):
            record = records.get(folder)
            if record is not None:
                if folder in self.awaiting_scan:
                    continue  # known from the ledger only: it waits for a whole scan of its root on this input
                event = transition(record, touched[folder])
                if event is not None:
                    out.append(event)
        self.folders_judged += len(touched)
        return out

    def _in_path_order(self, folders: Mapping[str, object]) -> list[str]:
        """``folders`` sorted; a wide fan-out picks them out of the sorted labels instead of sorting."""
        if len(folders) == 1:  # a change in one folder (each of a replay's records): nothing to order
            return list(folders)
        if len(folders) * 8 >= len(self._labelled_sorted):
            ordered = [folder for folder in self._labelled_sorted if folder in folders]
            if len(ordered) == len(folders):
                return ordered
        return sorted(folders)

    def forget_paths(self) -> None:
        """Drop every path and every open exposure, keeping the directory and the labels; no verdicts.

        For a processor whose share of the filesystem partitions changed: it rebuilds the paths it
        now owns from their history, and paths it no longer owns must not be judged by it again.
        """
        labels = {folder: record.label for folder, record in self.tracker.folders.items()}
        self.paths = PathTable()
        self.evaluator = ReaderEvaluator(self.directory, self.paths)
        self.tracker = ExposureTracker(
            self.directory,
            self.evaluator,
            source=self._source,
            clock=self._clock,
            max_users_listed=self.tracker.max_users_listed,
        )
        for folder, label in labels.items():
            self.tracker.set_label(folder, label)
        self._touched = {}
        self._closing = []

    def adopt(self, record: PublishedRecord, *, owned_only: bool = False) -> int:
        """Take what was last *published* for each folder (the ``record``) as what this engine emitted.

        After a rebuild the engine's idea of what it emitted comes from history replayed in other batches
        than the live run judged, against the directory as it is now; the record is the truth. Adopted
        before any live record is applied, so live changes continue the published exposures under their
        ids and sequences, and a new episode never takes an id the record holds for its folder. With
        ``owned_only`` (processors sharing the work) only folders this engine holds paths for are taken
        over; otherwise folders labelled later take theirs over when their label arrives. Returns how
        many open exposures were taken over.
        """
        adopted = 0
        self.awaiting_scan = set(record.awaiting_scan)
        self.tracker.unadopted = {}
        self.tracker.contents_ids = record.contents
        for folder, found in self.tracker.folders.items():
            if owned_only and folder not in self.paths.states:
                continue  # not among the paths this processor owns
            adopted += found.adopt(record.last.get(folder), record.ids.get(folder, ()), record.contents)
        if not owned_only:
            self.tracker.unadopted = {
                folder: (record.last.get(folder), ids)
                for folder, ids in record.ids.items()
                if folder not in self.tracker.folders
            }
        return adopted

    def reconcile(self, record: PublishedRecord, reason_id: str, *, owned_only: bool = False) -> list[Verdict]:
        """Judge every folder against what the record says of it: the transitions the record lacks.

        Run once a restart has read as far as the input reached when it began, so every record whose
        effects may have been published has been applied. A processor that stopped between taking a
        change and publishing its effect left a transition unpublished; it comes out here. Its cause is
        the latest directory change when that is newer than what the record says (filesystem records
        after the last commit came again as live records and were judged with their own causes), else
        ``reason_id``, now. An exposure open on the record for a folder no longer labelled is closed.
        """
        self.tracker.now = now = self.tracker.clock()
        change = self.last_directory_change
        out = []
        for folder in sorted(self.tracker.folders):
            if owned_only and folder not in self.paths.states:
                continue
            if folder in self.awaiting_scan:
                continue  # known from the ledger only (a fresh log being filled): judged after its root's scan
            last = record.last.get(folder)
            if change is not None and (last is None or change[1] >= last.observed_at):
                cause = Cause([change[0]], change[1], change[1], change[2])
            else:
                cause = Cause([reason_id], now, now)
            verdict = self.tracker.transition(self.tracker.folders[folder], cause)
            if verdict is not None:
                out.append(self._marked([verdict])[0])
        if not owned_only and self.tracker.folders:
            # Open on the record, and their folders no longer labelled: closed. (With no labelled folder at
            # all the input says nothing yet, e.g. a fresh log the collector is still filling: they wait for
            # their folders.) The ids stay known, so a later episode of the folder never takes one of them.
            for folder, (last, ids) in sorted(self.tracker.unadopted.items()):
                if last is None or last.status is ExposureStatus.CLOSED:
                    continue
                gone = FolderExposure(folder, last.label)  # judged with no paths: it closes
                gone.adopt(last, ids, record.contents)
                verdict = self.tracker.transition(gone, Cause([reason_id], now, now))
                if verdict is not None:
                    out.append(verdict)
                self.tracker.unadopted[folder] = (None, ids)  # closed now; its ids (the record's) stay known
        return out

    def step(self, event: AnyEvent) -> list[Verdict]:
        """Apply one event and flush: judging after every event (tests, small inputs)."""
        self.apply(event)
        return self.flush()

    def _scan_done(self, event: ScanCompleted) -> None:
        """A whole scan of a root is on this input: the folders below it that the ledger alone knew are judged now,
        with all it found, so they continue or close under their ids (see :meth:`reconcile`)."""
        prefix = event.root.rstrip("/") + "/"
        done = {f for f in self.awaiting_scan if f == event.root or f.startswith(prefix)}
        self.awaiting_scan -= done
        cause = Cause([event.event_id], event.observed_at, event.observed_at, preexisting=event.reason == "baseline")
        for folder in done:
            if folder in self.tracker.folders:
                self._touch(folder, cause)

    def _touch(self, folder: str, cause: Cause) -> None:
        found = self._touched.get(folder)
        if found is None:
            found = self._touched[folder] = Cause(
                list(cause.event_ids), cause.first_at, cause.last_at, cause.actor, preexisting=cause.preexisting
            )
            found.actor_confidence = cause.actor_confidence
        else:
            for event_id in cause.event_ids:
                found.add(event_id, cause.last_at, cause.actor, cause.preexisting)
        if cause.actor_confidence is not None:  # a filesystem event that said who (or that it could not tell)
            found.attribute(cause.event_ids[-1], cause.actor, cause.actor_confidence)

    # ------------------------------------------------------------ directory

    def _apply_directory(self, event: DirectoryUser | DirectoryGroup) -> None:
        # the directory as it was when permwatch first saw it: a snapshot of a principal new to it, or any
        # snapshot before the first scan completed (a restart's snapshot of a known one says what changed meanwhile)
        known = self.directory.users if isinstance(event, DirectoryUser) else self.directory.groups
        snapshot = event.change == "snapshot" and (not self.scanned_roots or event.name not in known)
        if isinstance(event, DirectoryUser):
            self.directory.apply_user(event)
            self._judge_all = True  # owners, named users, 'other' and primary groups may all move
        elif self.directory.apply_group(event):
            self._changed_groups.add(event.name)
        else:
            self._judge_all = True  # created, deleted or renumbered: ids now map to other people
        at = event.changed_at or event.observed_at
        if self.last_directory_change is None or at >= self.last_directory_change[1]:
            self.last_directory_change = (event.event_id, at, event.actor)
        if self._directory_cause is None:
            self._directory_cause = Cause([event.event_id], at, at, event.actor, preexisting=snapshot)
        else:
            self._directory_cause.add(event.event_id, at, event.actor, snapshot)

    def folders_depending_on(self, groups: set[str]) -> set[str]:
        """Labelled folders whose verdict a membership change of ``groups`` can move, found through indexes.

        A change to group G changes who is effectively in G and in every group G is nested into
        (cycles included); those groups' gids lead, through the path table's group index, to the
        paths whose ACL names them, and each such path to its labelled folder (or, for a directory,
        to the labelled folders beneath it, whose traverse it gates). Labels that allow G directly
        depend on G's direct members.
        """
        gids = set()
        sids = set()
        for group in groups:
            for containing in self.directory.containing_groups(group):
                g = self.directory.groups.get(containing)
                if g is not None and g.gid is not None:
                    gids.add(g.gid)
                if g is not None and g.sid is not None:
                    sids.add(g.sid)  # an NT ACL names a group by its SID
        folders: set[str] = set()
        labelled, children = self.tracker.folders, self.paths.children
        indexed = [self.paths.by_gid.get(gid) for gid in gids] + [self.paths.by_sid.get(sid) for sid in sids]
        for paths in indexed:
            if not paths:
                continue
            # set operations (each walks the smaller side): a wide fan-out names 100,000 labelled folders here
            folders |= labelled.keys() & paths
            for path in paths.difference(labelled):
                owner = self.folder_of(path)
                if owner is not None:
                    folders.add(owner)
            for path in children.keys() & paths:
                if children[path]:  # a directory with something beneath gates its traverse
                    folders.update(self.labelled_below(path))
        if self.shares:  # a share's valid/invalid users name groups by name: its path gates all beneath
            named: set[str] = set().union(*(self.directory.containing_groups(group) for group in groups))
            for share_path in self._share_paths_naming(named):
                owner = self.folder_of(share_path)
                if owner is not None:
                    folders.add(owner)
                folders.update(self.labelled_below(share_path))
        for group in groups:
            folders.update(self._allowing.get(group, ()))
            g = self.directory.groups.get(group)
            if g is not None and g.sid is not None:
                folders.update(self._allowing.get(g.sid, ()))  # a label may name the group by its SID
        return folders

    # ------------------------------------------------------------ filesystem

    def _apply_fs(self, event: FsPermissionEvent) -> None:
        first = event.kind is FsKind.BASELINE and self.first_scan_pending(event.path, event.observed_at)
        cause = Cause([event.event_id], event.observed_at, event.observed_at, preexisting=first)
        if event.actor is not None:
            cause.actor, cause.actor_confidence = self._actor_name(event.actor), event.actor.confidence
        if event.kind is FsKind.DELETED:
            self._remove(event.path, cause)
            return
        if event.kind is FsKind.MOVED and event.old_path and event.old_path != event.path:
            self._remove(event.old_path, cause)
        state = path_state(event)
        gates = self._gates_at(event.path) if self.shares else ()
        if gates:  # a fresh state holds no share: only a share's path needs its door folded in
            state = gated(state, gates)
        self._know_principals(event)
        self._put_state(event.path, state, cause)

    def _put_state(self, path: str, state: PathState, cause: Cause) -> None:
        """Take ``state`` as ``path``'s and mark what that can move: its folder, and when the path is a
        directory whose traverse changed, every labelled folder beneath it."""
        old = self.paths.put(path, state)
        if old is not None and old.acl == state.acl and old.object_type == state.object_type:
            return
        folder = self.folder_of(path)
        if folder is not None:
            self.tracker.folders[folder].set_path(path, state, intern(parent_of(path)), old)
            self._touch(folder, cause)
        if state.object_type is not ObjectType.DIRECTORY:
            return
        new_traverse = self.evaluator.verdict(state).traverse
        if (
            old is not None
            and old.object_type is ObjectType.DIRECTORY
            and self.evaluator.verdict(old).traverse == new_traverse
        ):
            return
        self.evaluator.forget_traverse()
        # Who can reach what lies beneath has changed: its folders must be judged again.
        if folder is not None and folder != path:
            self._touch(folder, cause)
        for below in self.labelled_below(path):
            self._touch(below, cause)

    # ------------------------------------------------------------ Samba shares (issue 16, item 6)

    def _apply_share(self, event: SambaShare) -> None:
        """A share's door changed: fold it into the state of its path (and out of the old path's, when it moved),
        judged like a permission change of that path (the traverse cache carries it beneath)."""
        # read at start, before the first scan of the roots it serves completed: what that scan finds
        first = self._first_scan_of_share_pending(event.path, event.observed_at)
        cause = Cause([event.event_id], event.observed_at, event.observed_at, preexisting=first)
        before = self.shares.pop(event.name, None)
        if not event.deleted:
            acl = None if event.acl is None else NtAcl(source="stored", dacl_present=True, dacl=event.acl)
            gate = ShareGate(event.name, event.valid_users, event.invalid_users, acl, event.error)
            self.shares[event.name] = (event.path, gate)
        for path in {event.path} | ({before[0]} if before is not None else set()):
            state = self.paths.get(path)
            if state is not None:
                self._put_state(path, gated(state, self._gates_at(path)), cause)

    def _first_scan_of_share_pending(self, path: str, at: datetime) -> bool:
        """`first_scan_pending` for a share, whose path may lie above its roots as well as in one."""
        below = path.rstrip("/") + "/"
        return not any(
            at > completed and (root == path or root.startswith(below) or path.startswith(root.rstrip("/") + "/"))
            for root, completed in self.scanned_roots.items()
        )

    def _gates_at(self, path: str) -> tuple[ShareGate, ...]:
        """The doors of the shares of ``path``, by share name (a server has few shares)."""
        found = [(name, gate) for name, (at, gate) in self.shares.items() if at == path]
        return tuple(gate for _, gate in sorted(found)) if found else ()

    def _share_paths_naming(self, groups: set[str]) -> set[str]:
        """The paths of the shares whose ``valid users``/``invalid users`` name one of ``groups``."""
        found = set()
        for path, gate in self.shares.values():
            for entry in gate.valid_users + gate.invalid_users:
                if entry.lstrip("@+&").rsplit("\\", 1)[-1] in groups:
                    found.add(path)
        return found

    def _actor_name(self, actor: Actor) -> str | None:
        """An fs event's actor as exposures name people: the directory's name for the uid, else the collector's."""
        if actor.uid is None:
            return None
        return self.directory.name_of_uid(actor.uid) or actor.text()

    def _know_principals(self, event: FsPermissionEvent) -> None:
        """Make the owner and named users principals now, not halfway through judging a folder whose
        label's audience was worked out before they existed (a local ``root`` the directory lacks)."""
        directory = self.directory
        if event.owner is not None and event.owner.id >= 0:
            directory.user_for_uid(event.owner.id, event.owner.name)
        for entry in event.acl:
            if entry.tag is AclTag.USER and entry.qualifier is not None:
                directory.user_for_uid(entry.qualifier, entry.name)

    def _remove(self, path: str, cause: Cause) -> None:
        removed = self.paths.remove_subtree(path)
        if removed:
            self.evaluator.forget_traverse()
        for p, old in removed:
            folder = self.folder_of(p)
            if folder is not None:
                self.tracker.folders[folder].set_path(p, None, parent_of(p), old)
                self._touch(folder, cause)

    # ------------------------------------------------------------ labels

    def _apply_label(self, event: LabelAssigned) -> None:
        outer = None if event.path == "/" else self.folder_of(parent_of(event.path))
        first = self.first_scan_pending(event.path, event.observed_at)
        cause = Cause([event.event_id], event.observed_at, event.observed_at, preexisting=first)
        if event.label is None:
            if self.labels.pop(event.path, None) is None:
                return
            self._labelled_sorted.remove(event.path)
            record = self.tracker.folders[event.path]
            self._index_allowing(event.path, record.label.allowed_groups, add=False)
            record.clear_paths()
            self._closing.append((record, cause))  # judged empty at the next flush: closes what was open
            self.tracker.drop(event.path)
            self._touched.pop(event.path, None)
        else:
            if event.path in self.labels and self.tracker.folders[event.path].label == event.label:
                return
            if event.path not in self.labels:
                insort(self._labelled_sorted, event.path)
            else:
                self._index_allowing(event.path, self.tracker.folders[event.path].label.allowed_groups, add=False)
            self._index_allowing(event.path, event.label.allowed_groups, add=True)
            self.labels[event.path] = event.label.name
            self._regroup(self.tracker.set_label(event.path, event.label))
            self._touch(event.path, cause)
        if outer is not None:  # the folder around it gains or loses the paths beneath
            self._regroup(self.tracker.folders[outer])
            self._touch(outer, cause)

    def _index_allowing(self, folder: str, groups: tuple[str, ...], *, add: bool) -> None:
        for group in groups:
            if add:
                self._allowing.setdefault(group, set()).add(folder)
            else:
                self._allowing.get(group, set()).discard(folder)

    def _regroup(self, record: FolderExposure) -> None:
        record.clear_paths()
        for path in self.domain(record.folder):
            record.set_path(path, self.paths.states[path], intern(parent_of(path)), None)

    # ------------------------------------------------------------ helpers

    def folder_of(self, path: str) -> str | None:
        """The nearest labelled folder at or above ``path``."""
        labels = self.tracker.folders
        while True:
            if path in labels:
                return path
            if path == "/":
                return None
            path = parent_of(path)

    def labelled_below(self, directory: str) -> Iterator[str]:
        """Labelled folders strictly beneath ``directory``."""
        prefix = directory.rstrip("/") + "/"
        ordered = self._labelled_sorted
        i = bisect_left(ordered, prefix)
        while i < len(ordered) and ordered[i].startswith(prefix):
            yield ordered[i]
            i += 1

    def domain(self, folder: str) -> Iterator[str]:
        """Known paths governed by ``folder``'s label: its subtree minus nested labelled folders."""
        if folder in self.paths.states:
            yield folder
        stack = list(self.paths.children.get(folder, ()))
        labels = self.tracker.folders
        while stack:
            path = stack.pop()
            if path in labels:
                continue
            if path in self.paths.states:
                yield path
            stack.extend(self.paths.children.get(path, ()))
