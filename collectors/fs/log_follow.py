"""Follow a log file another program writes (Samba's audit lines, auditd's records): what was added since last asked.

Read from its end at start (what is already there describes the past), and through rotation: when the path
names a new file, the rest of the old one is read, then the new one from its start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO


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
