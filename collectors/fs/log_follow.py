"""Follow a log file another program writes (Samba's audit lines, auditd's records): what was added since last asked,
and the actor source built on that (:class:`LogActors`).

Read from its end at start (what is already there describes the past), and through rotation: when the path
names a new file, the rest of the old one is read, then the new one from its start.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from permwatch.events import Actor


class LogFollower:
    """Follows one log file from its end; :meth:`lines` gives the complete lines written since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._inode: int | None = None
        self._partial = ""
        self._open(at_end=True)

    def _open(self, *, at_end: bool) -> None:
        try:
            handle = open(self.path, encoding="utf-8", errors="replace")  # noqa: SIM115 - held open to follow it
        except FileNotFoundError:
            self._file, self._inode = None, None
            return
        if at_end:
            handle.seek(0, os.SEEK_END)
        self._file, self._inode = handle, os.fstat(handle.fileno()).st_ino

    def lines(self) -> list[str]:
        if self._file is None:
            self._open(at_end=False)  # appeared since: every line in it is new
            if self._file is None:
                return []
        out = self._read()
        try:
            rotated = os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            rotated = False
        if rotated:  # what the old file still had is read above; the new one from its start
            self._file.close()
            self._open(at_end=False)
            out += self._read()
        return out

    def _read(self) -> list[str]:
        assert self._file is not None
        text = self._partial + self._file.read()
        *complete, self._partial = text.split("\n")
        return complete

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class LogActors:
    """An actor source that reads another program's log (Samba's audit, auditd): per path below the roots, the
    latest change's actor, told once. A subclass says what a batch of new lines changed (:meth:`changes`)."""

    def __init__(self, log_path: Path, *, capacity: int = 100_000) -> None:
        self._log_path = log_path
        self._capacity = capacity
        self._log: LogFollower | None = None
        self._lock = threading.Lock()
        self._latest: OrderedDict[str, Actor] = OrderedDict()
        self._roots: tuple[str, ...] = ()
        self._prefixes: tuple[str, ...] = ()

    def start(self, roots: Sequence[str]) -> None:
        self._roots = tuple(roots)
        self._prefixes = tuple(r.rstrip("/") + "/" for r in roots)
        self._log = LogFollower(self._log_path)

    def changes(self, lines: list[str]) -> Iterator[tuple[str, Actor]]:
        """The (path, actor) of each permission change the new ``lines`` record, in order."""
        raise NotImplementedError

    def drain(self) -> None:
        """Read what the log gained and remember each change below the roots."""
        with self._lock:
            if self._log is None:
                return
            for path, actor in self.changes(self._log.lines()):
                if path not in self._roots and not path.startswith(self._prefixes):
                    continue
                self._latest.pop(path, None)  # the latest change's actor
                self._latest[path] = actor
                if len(self._latest) > self._capacity:
                    self._latest.popitem(last=False)

    def actor_of(self, path: str) -> Actor | None:
        self.drain()
        with self._lock:
            return self._latest.pop(path, None)

    def close(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None
