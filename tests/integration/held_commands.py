"""Real commands (chmod, setfacl, cat) run as another uid, kept alive after their change until the test lets go.

A listener can ask the kernel who a process was only while the process exists, and ``chmod`` exits a millisecond
after its change. To make "the actor is named" a fact rather than a race, the command gets one more operand that
does not exist, and a stderr pipe filled to the brim: after doing its work on the real operands it blocks writing
the error about the last one, until :meth:`HeldCommand.release` drains the pipe. The command is the real binary,
its change the real syscall; only its exit waits.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import weakref
from collections.abc import Sequence

F_GETPIPE_SZ = 1032
MISSING = "/nonexistent-permwatch-operand"


class HeldCommand:
    def __init__(self, uid: int, gid: int, argv: Sequence[str]) -> None:
        read_end, write_end = os.pipe()
        size = fcntl.fcntl(write_end, F_GETPIPE_SZ)
        os.set_blocking(write_end, False)
        os.write(write_end, b"x" * size)  # full: the command's first write to stderr blocks
        os.set_blocking(write_end, True)
        self._read_end = read_end
        ident = [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        self.process = subprocess.Popen(
            ["setpriv", *ident, *argv, MISSING], stdout=subprocess.DEVNULL, stderr=write_end
        )
        os.close(write_end)
        # Should a test fail before releasing it, closing the read end lets the command die of EPIPE.
        self._closer = weakref.finalize(self, os.close, read_end)

    def release(self) -> int:
        """Let the command finish (drain its stderr); its exit code (non-zero: the missing operand)."""
        while os.read(self._read_end, 65536):
            pass
        self._closer()
        return self.process.wait(60)


def run_and_hold(uid: int, gid: int, *argv: str) -> HeldCommand:
    return HeldCommand(uid, gid, argv)
