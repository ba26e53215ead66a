"""The filesystem collector's publisher: store a path's state, emit its event, flush, then commit.

Every event the collector publishes goes through one :class:`Publisher`. It
records the state in the store before emitting (emitting may complete a
batch, and the commit after that batch's flush must include the record of the
event that completed it), and commits the store only after the emitter
flushed what the writes describe, so a crash publishes again rather than
never. As the bus may take events before that flush, each event's path is
also marked in flight and the store commits writes and marks before anything
is sent (the emitter's ``before_send``, and at the start of a confirm): a
crash or a failed flush leaves those paths unknown, so they are published
again even when they went back meanwhile to what the store recorded (see
:mod:`collectors.fs.state`). A batch with an event the full spool dropped is
not committed at all: the rescan the spool asks for once drained publishes
what differs from what did reach the bus. The time a change was observed is an argument of
:meth:`Publisher.publish`, never state of the publisher. Labels of folders
published here go out through the same protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from collectors.acl import NameCache
from collectors.fs.metrics import FsCollectorStats
from collectors.fs.read import PathState
from collectors.fs.state import PublishedRecord, PublishedStateStore
from collectors.fs.wire import FsWireEncoder, time_text
from collectors.spool import RecordDropped
from permwatch.events import Actor, Event, FsKind, FsPermissionEvent, Identity, LabelAssigned, ObjectType, utcnow

EncodedEmit = Callable[[str, bytes, str], None]


class Emitter(Protocol):
    """Where events go: ``emit`` may buffer, ``flush`` returns once the bus has them."""

    def emit(self, event: Event) -> None: ...

    def flush(self) -> None: ...


@runtime_checkable
class SendingEmitter(Emitter, Protocol):
    """An emitter that may hand events to the bus before its flush; it calls ``before_send`` first, each time."""

    before_send: Callable[[], None] | None


@runtime_checkable
class WireEmitter(Emitter, Protocol):
    """An emitter that also takes permission events already encoded (see :mod:`collectors.fs.wire`)."""

    def emit_wire(self, path: str, value: bytes, source: str) -> None: ...


class Labeller(Protocol):
    """Decides the sensitivity label of directories (collectors/labels.py)."""

    def observe(self, path: str) -> LabelAssigned | None: ...

    def forget(self, path: str) -> LabelAssigned | None: ...

    @property
    def marker_file(self) -> str:
        """The name of a file whose presence in a folder may label it."""
        ...


class Publisher:
    """Publishes one collector's permission and label events with the store → emit → flush → commit protocol."""

    def __init__(
        self,
        store: PublishedStateStore,
        emitter: Emitter,
        *,
        source: str,
        names: NameCache,
        labeller: Labeller | None,
        batch_size: int,
        stats: FsCollectorStats,
        label_listener: Callable[[LabelAssigned], None] | None = None,
    ) -> None:
        self._label_listener = label_listener
        """told of every label event published (the open source watches labelled folders, #18)"""
        self._store = store
        self._emitter = emitter
        self._source = source
        self._names = names
        self._labeller = labeller
        self._batch_size = batch_size
        """Events between a flush and the store's commit: a crash publishes at most this many again, and
        every commit costs (a scan of 50k folders: 0.55 s of commits at 500, 0.1 s at 5000)."""
        self._stats = stats
        self._wire = FsWireEncoder(source)
        if isinstance(emitter, SendingEmitter):
            emitter.before_send = store.commit_in_flight  # marks durable before the bus may take their events
        self.encoded_emit: EncodedEmit | None = emitter.emit_wire if isinstance(emitter, WireEmitter) else None
        """The emitter's way in for events encoded elsewhere (scan workers); ``None`` when it takes only models."""
        self._unconfirmed = 0
        self._dropped_since_confirm = False
        """The spool was full for an event since the last confirm: that batch stays out of the store."""
        self._labels_unconfirmed: set[str] = set()
        self._labels_dirty: set[str] = set()
        """Folders whose label event was dropped: their next visit publishes the label, changed or not."""

    @property
    def marker_file(self) -> str | None:
        """The label marker file's name, when folders are labelled."""
        return None if self._labeller is None else self._labeller.marker_file

    # ------------------------------------------------------------ permissions

    def publish(
        self,
        path: str,
        state: PathState,
        kind: FsKind,
        *,
        observed_at: datetime | None,
        old_path: str | None = None,
        actor: Actor | None = None,
    ) -> None:
        """Publish ``state`` of ``path``, observed at ``observed_at`` (``None``: now, as it is read), changed
        by ``actor`` when an actor source could tell."""
        self._store.put(path, object_type=state.object_type, fingerprint=state.fingerprint)
        self._store.mark(path, object_type=state.object_type)
        if old_path is not None:
            self._store.mark(old_path, object_type=state.object_type)
        if self.encoded_emit is not None and old_path is None:
            observed = None if observed_at is None else time_text(observed_at)
            value = self._wire.encode_state(path, kind, state, self._names, observed, actor)
            self._emit_encoded(self.encoded_emit, path, value)
            return
        self.emit(
            FsPermissionEvent(
                kind=kind,
                path=path,
                old_path=old_path,
                object_type=state.object_type,
                owner=Identity(id=state.uid, name=self._names.user(state.uid)),
                group=Identity(id=state.gid, name=self._names.group(state.gid)),
                mode=state.mode,
                acl=state.acl,
                default_acl=state.default_acl,
                acl_kind=state.acl_kind,
                nt_acl=state.nt_acl,
                actor=actor,
                source=self._source,
                observed_at=observed_at or utcnow(),
            )
        )

    def publish_encoded(self, path: str, object_type: ObjectType, fingerprint: bytes, value: bytes) -> None:
        """Publish an event a scan worker read and encoded (only when :attr:`encoded_emit` is set)."""
        assert self.encoded_emit is not None
        self._store.put(path, object_type=object_type, fingerprint=fingerprint)
        self._store.mark(path, object_type=object_type)
        self._emit_encoded(self.encoded_emit, path, value)
        if object_type is ObjectType.DIRECTORY:
            self.observe_label(path)

    def publish_deleted(self, record: PublishedRecord) -> None:
        """Publish that ``record``'s path is gone (its store record is the caller's to delete)."""
        deleted = FsPermissionEvent(
            kind=FsKind.DELETED, path=record.path, object_type=record.object_type, source=self._source
        )
        self._store.mark(record.path, object_type=record.object_type)
        self.emit(deleted)
        if record.is_dir:
            self.forget_label(record.path)

    # ----------------------------------------------------------------- labels

    def observe_label(self, folder: str) -> None:
        """Publish the folder's label if it changed, or whatever it is now if its last label event was dropped."""
        if self._labeller is None:
            return
        if folder not in self._labels_dirty:
            self._emit_label(self._labeller.observe(folder))
            return
        self._labels_dirty.discard(folder)
        self._labeller.forget(folder)
        assigned = self._labeller.observe(folder)
        self._emit_label(assigned or LabelAssigned(path=folder, label=None, origin="policy", source=self._source))

    def forget_label(self, folder: str) -> None:
        """The folder is gone from where it was: publish that its label went with it, if it had one."""
        if self._labeller is not None:
            self._emit_label(self._labeller.forget(folder))

    def _emit_label(self, assigned: LabelAssigned | None) -> None:
        if assigned is None:
            return
        if not assigned.source:
            assigned = assigned.model_copy(update={"source": self._source})
        self._labels_unconfirmed.add(assigned.path)
        self.emit(assigned)
        if self._label_listener is not None:
            self._label_listener(assigned)

    # --------------------------------------------------------------- protocol

    def emit(self, event: Event) -> None:
        try:
            self._emitter.emit(event)
        except RecordDropped:
            self._dropped_since_confirm = True  # the spool logs and counts it; confirm keeps the batch out
        self._emitted()

    def _emit_encoded(self, emit: EncodedEmit, path: str, value: bytes) -> None:
        try:
            emit(path, value, self._source)
        except RecordDropped:
            self._dropped_since_confirm = True
        self._emitted()

    def _emitted(self) -> None:
        self._stats.events_emitted += 1
        self._unconfirmed += 1
        if self._unconfirmed >= self._batch_size:
            self.confirm()

    def confirm(self) -> None:
        """Flush the emitter, then commit the store writes describing what it flushed."""
        if not self._unconfirmed and not self._store.has_uncommitted:
            return
        try:
            self._store.commit_in_flight()  # what the flush sends is marked in flight first
            self._emitter.flush()
        except RecordDropped:
            self._dropped_since_confirm = True  # a batched event the full spool dropped at the flush
        except BaseException:
            self.discard_unconfirmed()
            raise
        if self._dropped_since_confirm:
            # Some of these events were dropped by the full spool, so the store keeps the states that
            # did reach the bus; the rescan once the spool has drained publishes the differences.
            self.discard_unconfirmed()
            return
        self._store.commit()
        self._labels_unconfirmed.clear()
        self._unconfirmed = 0

    def discard_unconfirmed(self) -> None:
        """After a failure or a drop: forget store writes whose events may not have reached the bus, and make the
        paths whose events may have reached it unknown, so the next scan publishes them again."""
        self._store.forget_unconfirmed()
        self._labels_dirty |= self._labels_unconfirmed
        self._labels_unconfirmed.clear()
        self._dropped_since_confirm = False
        self._unconfirmed = 0
