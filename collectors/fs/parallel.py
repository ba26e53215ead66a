"""A first scan spread over worker processes, one unit (a folder below the root) at a time.

A first scan reads every path once and has nothing to compare with, so the
reading (lstat, the ACL xattrs, listings) and the encoding of each event can
run in other processes while the collector stores and publishes what they
found. Each unit is walked by one worker, parent before children, and its
findings come back in that order, so one unit's events keep their order on the
bus. Workers are spawned (the collector runs beside threads it must not fork)
and read only, each through the ACL reader the collector names (built afresh
in the worker from :data:`collectors.fs.readers.ACL_READERS`); the
collector's own thread keeps the state store, the labels and the bus.

A finding is ``(path, object_type, fingerprint, event bytes, error)``: an
unreadable path has ``error`` set and nothing else; a path published as "ACL
unreadable" (its NT ACL did not decode) has both, so the collector counts it.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import traceback
from collections.abc import Generator, Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

from collectors.acl import MalformedAclError, NameCache
from collectors.fs.read import PathExcluder, publishable
from collectors.fs.readers import AclReader, acl_reader_named
from collectors.fs.wire import FsWireEncoder
from permwatch.events import FsKind

Finding = tuple[str, str, bytes, bytes | None, str | None]

CHUNK = 1000
"""Findings per message from a worker."""

_WORKER_DONE = "done"


class WorkerFailed(RuntimeError):
    """A scan worker stopped on something it could not handle; the message carries its traceback."""


def walk_units(
    units: Sequence[str],
    *,
    workers: int,
    excludes: Sequence[str],
    source: str,
    kind: FsKind,
    acl_reader: str = "posix",
    acl_reader_options: dict[str, str] | None = None,
) -> Generator[list[Finding], None, None]:
    """Chunks of findings below ``units`` (each unit itself is the caller's), from ``workers`` processes.

    Each worker reads with the reader ``acl_reader`` names. Closing the iterator early (the scan was
    stopped) stops the workers.
    """
    context = multiprocessing.get_context("spawn")
    tasks: Queue[str | None] = context.Queue()
    results: Queue[Any] = context.Queue(maxsize=8 * workers)
    for unit in units:
        tasks.put(unit)
    for _ in range(workers):
        tasks.put(None)
    processes: list[BaseProcess] = [
        context.Process(
            target=_work,
            args=(tasks, results, list(excludes), source, kind.value, acl_reader, acl_reader_options),
            daemon=True,
            name="scan-worker",
        )
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    running = workers
    try:
        while running:
            try:
                message = results.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in processes):
                    raise WorkerFailed("every scan worker ended without finishing") from None
                continue
            if message == _WORKER_DONE:
                running -= 1
            elif isinstance(message, str):
                raise WorkerFailed(message)
            else:
                yield message
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(5)
        tasks.close()
        results.close()


def _work(
    tasks: Queue[str | None],
    results: Queue[Any],
    excludes: list[str],
    source: str,
    kind: str,
    acl_reader: str,
    acl_reader_options: dict[str, str] | None = None,
) -> None:
    try:
        names = NameCache()
        reader = acl_reader_named(acl_reader, names, acl_reader_options)
        walker = _UnitWalker(results, PathExcluder(excludes), FsWireEncoder(source), FsKind(kind), reader, names)
        while (unit := tasks.get()) is not None:
            walker.walk(unit)
        walker.send()
        results.put(_WORKER_DONE)
    except BaseException:
        results.put(traceback.format_exc())


class _UnitWalker:
    """Walks units in a worker, sending findings by the thousand."""

    def __init__(
        self,
        results: Queue[Any],
        excluder: PathExcluder,
        wire: FsWireEncoder,
        kind: FsKind,
        reader: AclReader,
        names: NameCache,
    ) -> None:
        self._results = results
        self._excluder = excluder
        self._wire = wire
        self._kind = kind
        self._reader = reader
        self._names = names
        self._chunk: list[Finding] = []

    def walk(self, unit: str) -> None:
        found = self._chunk
        pending = [unit]
        while pending:
            directory = pending.pop()
            try:
                with os.scandir(directory) as listing:
                    entries = [(entry.name, entry.path) for entry in listing]
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                found.append((directory, "", b"", None, f"cannot list it ({exc})"))
                continue
            for name, path in entries:
                if self._excluder.excludes(path, name):
                    continue
                if not publishable(path):
                    found.append((path, "", b"", None, "the event schema cannot carry this path"))
                    continue
                try:
                    state = self._reader.read(path)
                except (OSError, MalformedAclError) as exc:
                    found.append((path, "", b"", None, f"cannot read its permissions ({exc})"))
                    continue
                if state is None:
                    continue
                value = self._wire.encode_state(path, self._kind, state, self._names)
                unreadable = state.nt_acl is not None and state.nt_acl.source == "unreadable"
                note = state.nt_acl.error if unreadable and state.nt_acl is not None else None
                found.append((path, state.object_type.value, state.fingerprint, value, note))
                if state.is_dir:
                    pending.append(path)
                if len(found) >= CHUNK:
                    self.send()
                    found = self._chunk

    def send(self) -> None:
        if self._chunk:
            self._results.put(self._chunk)
            self._chunk = []
