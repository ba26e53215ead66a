"""The processor role when several processors share the work: Kafka consumer groups, nothing home-made.

It runs on either Kafka client: all it asks of the ``fs`` consumer is
:class:`permwatch.transport.base.SharedPartitions`.

Every processor reads the whole ``directory``, ``labels`` and ``decisions`` topics (in a
group of its own, ``<group>.<instance_id>``, so its position survives a
restart) and the ``fs`` partitions the shared group ``<group>`` gives it.
Filesystem events are keyed by unit (see :mod:`permwatch.keys`), so one
labelled folder's paths arrive at one processor, and the watched roots (whose
traverse bits gate everything) are on every partition.

When the group's assignment changes, a processor drops every path it holds
and rebuilds the ones it now owns from their partitions' history (records up
to the group's commit come marked replayed and publish nothing), judged
against the directory as it is now. Then, once it has read as far as the
partitions reached when the rebuild ended, it reconciles with the record: the
last exposure event per folder on the ``exposures`` topic is taken as what
was emitted, and only the difference is published. That closes the gap of a
processor killed after taking a directory change and before publishing its
effect on the folders it owned. Exposure ids and sequences continue the
published ones, and the alerts stage drops repeats.

Each processor joins the shared group under its ``instance_id`` (Kafka's
static membership), so one restarted within the session timeout gets its
partitions back without a rebalance. It checkpoints as the single processor
does (:mod:`processor.checkpoint`), only while it is not rebuilding or
reconciling: the snapshot covers the directory, the labels and the paths of
the partitions it owned, with their offsets. A restart that gets exactly
those partitions back starts there and replays only what came after; one
that gets others drops the saved paths and rebuilds them from history (the
directory and labels still start at the checkpoint).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from permwatch.config import ProcessorConfig
from permwatch.events import TOPIC_DECISIONS, TOPIC_DIRECTORY, TOPIC_FS, TOPIC_LABELS
from permwatch.transport.base import Consumer, Record, SharedPartitions
from processor.checkpoint import Offsets, process_age
from processor.runner import _NO_COMMIT, ProcessorRunner

log = logging.getLogger("permwatch.processor")


def instance_of(config: ProcessorConfig) -> str:
    """This processor's stable name among those sharing the work (its ``instance_id``, else the host name)."""
    return config.instance_id or socket.gethostname()


@dataclass
class _Share:
    """Where a partitioned processor stands with its share of the fs partitions."""

    generation: int = -1
    """the consumer's assignment count last acted on"""
    partitions: set[tuple[str, int]] = field(default_factory=set)
    rebuilding: bool = False
    """replaying the history of newly owned partitions"""
    pending: bool = False
    """a reconciliation with the exposures on record is owed (after each rebuild)"""
    held: list[Record] = field(default_factory=list)
    """live records that came during a rebuild, handled once it is done"""
    reconcile_at: dict[tuple[str, int], int] | None = None
    """the partitions' ends when the rebuild ended: reconcile once read that far"""
    save_now: bool = False


class PartitionedProcessor(ProcessorRunner):
    """A :class:`ProcessorRunner` that owns only its share of the ``fs`` topic's partitions."""

    reconciled = 0
    """How many reconciliations ran (one after each rebuild)."""

    def run(self, stop: threading.Event) -> None:
        age = process_age()
        origin = time.monotonic() - (age or 0.0)
        instance = instance_of(self.config)
        member = f"{self.config.group}.{instance}"
        saved = self._restore() or {}
        shared = self.bus.consumer(
            [TOPIC_DIRECTORY, TOPIC_LABELS, TOPIC_DECISIONS],  # decisions (issue 19): every processor holds them
            member,
            replay_history=True,
            replay_from={tp: offset for tp, offset in saved.items() if tp[0] != TOPIC_FS} or None,
        )
        owned = self.bus.consumer(
            [TOPIC_FS],
            self.config.group,
            replay_history=True,
            replay_from={tp: offset for tp, offset in saved.items() if tp[0] == TOPIC_FS} or None,
            member=member,
        )
        if not isinstance(owned, SharedPartitions):  # guarded by the config check
            raise TypeError("processor.partitioned needs a Kafka transport (kafka or confluent)")
        log.info("processor %s started (fs partitions shared in group %s)", instance, self.config.group)
        share = _Share()
        stopped = False
        try:
            # The directory first: a rebuild judges against the directory as it is now.
            while not stop.is_set():
                records = shared.poll(0.5, max_records=self.config.batch_max)
                if not records:
                    break
                self._handled(records, shared)
            while not stop.is_set():
                self._step(owned, shared, share, origin, instance)
            stopped = True
        finally:
            owned.close()
            shared.close()
            if self.checkpoints is not None:
                offsets = self._saved_offsets(share.partitions)
                if stopped and not share.rebuilding and not share.pending and not self.checkpoints.covers(offsets):
                    self.checkpoints.save(self.engine, offsets, records=self.records_covered, wait=True)
                self.checkpoints.wait()

    def _step(self, owned: SharedPartitions, shared: Consumer, share: _Share, origin: float, instance: str) -> None:
        """One poll of the owned fs partitions and what follows from it: a rebuild when they moved, the records,
        the reconciliation once the rebuild has caught up, the directory's news, a checkpoint when due."""
        records = owned.poll(0.2, max_records=self.config.batch_max)
        if owned.generation != share.generation:
            self._reassigned(owned, share)
        if share.rebuilding:
            rebuilt = self._rebuild(records, owned, share, origin)
            if rebuilt is None:
                return  # the directory waits too, as it waited during the rebuild
            records = rebuilt
        self._handled_in_batches(records, owned)
        if share.pending:
            if share.reconcile_at is None:
                share.reconcile_at = owned.end_offsets()
            if owned.reached(share.reconcile_at):
                self._reconcile(instance)
                share.pending = False
        news = shared.poll(0.0 if records else 0.05, max_records=self.config.batch_max)
        if news:
            self._handled(news, shared)
        if not records and not news and not share.pending:
            self.caught_up.set()
            if self.engine.decisions.approvals:  # respond (issue 19): an approval that ran out, said once
                self._publish_expired()
        if self.checkpoints is not None and not share.rebuilding and not share.pending:
            offsets = self._saved_offsets(share.partitions)
            if (share.save_now and not self.checkpoints.covers(offsets)) or self.checkpoints.due(offsets):
                self.checkpoints.save(self.engine, offsets, records=self.records_covered)
                share.save_now = False

    def _reassigned(self, owned: SharedPartitions, share: _Share) -> None:
        """The group gave this processor other fs partitions (or its first): drop the paths it held, unless these
        are the partitions its checkpoint's paths came from, and rebuild."""
        kept = share.generation == -1 and owned.resumed  # the partitions the checkpoint's paths came from
        share.generation = owned.generation
        share.partitions = owned.partitions()
        if kept:
            log.info("fs partitions as at the checkpoint: replaying what came after it")
        else:
            self.engine.forget_paths()
            self._book_from_engine()  # the folders given up are another processor's to count now
            self.covered = {tp: offset for tp, offset in self.covered.items() if tp[0] != TOPIC_FS}
            log.info("fs partitions reassigned: rebuilding the paths this processor owns")
        share.held, share.reconcile_at = [], None
        share.rebuilding = share.pending = True

    def _rebuild(
        self, records: list[Record], owned: SharedPartitions, share: _Share, origin: float
    ) -> list[Record] | None:
        """History first, all of it; live records wait until the record's exposures are adopted, so they move
        the exposures that were published, under their ids. Nothing is committed meanwhile: replayed records
        have no effect to commit and the held ones are not handled. The live records to handle once the
        rebuild is done; None while it is not."""
        replayed = [r for r in records if r.replayed]
        share.held += [r for r in records if not r.replayed]
        if replayed:
            self._handled(replayed, _NO_COMMIT)
        if owned.replay_pending():
            return None
        share.rebuilding = False
        self._adopt()
        if self.restart_seconds is None:
            self._rebuilt(time.monotonic() - origin, None)
            share.save_now = bool(self.replayed)  # what was just replayed is not replayed again soon
        else:  # partitions moved: the last checkpoint names the old ones, a restart would rebuild
            share.save_now = True
        held, share.held = share.held, []
        return held

    def _saved_offsets(self, partitions: set[tuple[str, int]]) -> Offsets:
        """What a checkpoint covers: the directory and labels as read, and every fs partition owned (one with
        nothing handled yet from its first record), so a restart knows which partitions the paths came from."""
        shared = {tp: offset for tp, offset in self.covered.items() if tp[0] != TOPIC_FS}
        return {**shared, **{tp: self.covered.get(tp, 0) for tp in partitions}}

    def _adopt(self) -> None:
        """Take the exposures last published for the folders now owned as what was emitted (no events)."""
        record = self._published()
        adopted = self.engine.adopt(record, owned_only=True)
        self.engine.decisions.forget_told(record.last)  # expiries the record already tells
        self._book_from_engine()
        log.info("rebuilt; took over the published state of %d folder(s)", adopted)

    def _reconcile(self, instance: str) -> None:
        record = self._published()
        reason = f"reconcile.{instance}.{uuid.uuid4().hex[:12]}"
        self._publish_reconciled(self.engine.reconcile(record, reason, owned_only=True), record)
        self.reconciled += 1
