"""The processor's core: apply input events in order, return exposure events.

Pure and synchronous, no bus: the same sequence of events always gives the
same exposures with the same ids, which is what makes live runs, restarts
and replays agree. Filesystem and label events are judged at once, touching
only the paths they change (and, when a directory's traverse bits change,
the paths beneath it). Directory events are applied at once but judged
together at the end of a run of them (:meth:`Engine.settle`), because a
snapshot of a thousand groups should cost one re-evaluation, not a thousand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from permwatch.events import (
    AnyEvent,
    DirectoryGroup,
    DirectoryUser,
    ExposureEvent,
    FsKind,
    FsPermissionEvent,
    LabelAssigned,
    ObjectType,
    utcnow,
)
from processor.exposures import Cause, ExposureTracker, FolderExposure
from processor.readers import ReaderEvaluator
from processor.state import Directory, PathTable, parent_of, path_state


class Engine:
    def __init__(self, *, source: str = "processor", clock: Callable[[], datetime] = utcnow) -> None:
        self.directory = Directory()
        self.paths = PathTable()
        self.evaluator = ReaderEvaluator(self.directory, self.paths)
        self.tracker = ExposureTracker(self.directory, self.evaluator, source=source, clock=clock)
        self.labels: dict[str, str] = {}
        self._pending_directory: list[DirectoryUser | DirectoryGroup] = []

    # ------------------------------------------------------------ entry points

    def apply(self, event: AnyEvent) -> list[ExposureEvent]:
        if isinstance(event, DirectoryUser | DirectoryGroup):
            if isinstance(event, DirectoryUser):
                self.directory.apply_user(event)
            else:
                self.directory.apply_group(event)
            self._pending_directory.append(event)
            return []
        out = self.settle()
        if isinstance(event, FsPermissionEvent):
            out += self._apply_fs(event)
        elif isinstance(event, LabelAssigned):
            out += self._apply_label(event)
        return out

    def settle(self) -> list[ExposureEvent]:
        """Judge every labelled folder after a run of directory changes."""
        if not self._pending_directory:
            return []
        events, self._pending_directory = self._pending_directory, []
        last = events[-1]
        actor = next((e.actor for e in reversed(events) if e.actor), None)
        cause = Cause(tuple(e.event_id for e in events), last.changed_at or last.observed_at, actor)
        self.evaluator.reset()
        out = []
        for folder in sorted(self.tracker.folders):
            record = self.tracker.folders[folder]
            self._rejudge(record)
            event = self.tracker.transition(record, cause)
            if event is not None:
                out.append(event)
        return out

    # ------------------------------------------------------------ filesystem

    def _apply_fs(self, event: FsPermissionEvent) -> list[ExposureEvent]:
        touched: set[str] = set()
        if event.kind is FsKind.DELETED:
            self._remove(event.path, touched)
        else:
            if event.kind is FsKind.MOVED and event.old_path and event.old_path != event.path:
                self._remove(event.old_path, touched)
            self._upsert(event, touched)
        return self._transitions(touched, Cause((event.event_id,), event.observed_at))

    def _remove(self, path: str, touched: set[str]) -> None:
        removed = self.paths.remove_subtree(path)
        if removed:
            self.evaluator.forget_traverse()
        for p in removed:
            folder = self.folder_of(p)
            if folder is not None:
                self.tracker.folders[folder].set_path(p, None)
                touched.add(folder)

    def _upsert(self, event: FsPermissionEvent, touched: set[str]) -> None:
        state = path_state(event)
        old = self.paths.put(event.path, state)
        if old is not None and old.acl == state.acl and old.object_type == state.object_type:
            return
        folder = self.folder_of(event.path)
        if folder is not None:
            self.tracker.judge_path(self.tracker.folders[folder], event.path)
            touched.add(folder)
        if state.object_type is not ObjectType.DIRECTORY:
            return
        new_traverse = self.evaluator.verdict(state).traverse
        if old is not None and old.object_type is ObjectType.DIRECTORY:
            if self.evaluator.verdict(old).traverse == new_traverse:
                return
        elif not self.paths.children.get(event.path):
            return
        # What lies beneath can now be reached by others (or no longer): judge it again.
        self.evaluator.forget_traverse()
        for path in self.paths.subtree(event.path):
            if path == event.path:
                continue
            below = self.folder_of(path)
            if below is not None:
                self.tracker.judge_path(self.tracker.folders[below], path)
                touched.add(below)

    # ------------------------------------------------------------ labels

    def _apply_label(self, event: LabelAssigned) -> list[ExposureEvent]:
        previous_owner = self.folder_of(event.path)
        cause = Cause((event.event_id,), event.observed_at)
        out = []
        if event.label is None:
            if self.labels.pop(event.path, None) is None:
                return []
            record = self.tracker.folders[event.path]
            record.clear_paths()
            closed = self.tracker.transition(record, cause)
            if closed is not None:
                out.append(closed)
            self.tracker.drop(event.path)
        else:
            if event.path in self.labels and self.tracker.folders[event.path].label == event.label:
                return []
            self.labels[event.path] = event.label.name
            self.tracker.set_label(event.path, event.label)
        rejudge = {event.path} if event.label is not None else set()
        if previous_owner is not None and previous_owner != event.path:
            rejudge.add(previous_owner)
        for folder in sorted(rejudge):
            record = self.tracker.folders[folder]
            self._rejudge(record)
            changed = self.tracker.transition(record, cause)
            if changed is not None:
                out.append(changed)
        return out

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

    def _rejudge(self, record: FolderExposure) -> None:
        record.clear_paths()
        for path in self.domain(record.folder):
            self.tracker.judge_path(record, path)

    def _transitions(self, touched: set[str], cause: Cause) -> list[ExposureEvent]:
        out = []
        for folder in sorted(touched):
            record = self.tracker.folders.get(folder)
            if record is None:
                continue
            event = self.tracker.transition(record, cause)
            if event is not None:
                out.append(event)
        return out
