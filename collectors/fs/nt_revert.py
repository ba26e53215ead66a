"""Reverting a Windows (NT) ACL on a Samba share: the recorded ACL as SDDL, and the step that restores it.

The revert executor (:mod:`collectors.fs.revert`) restores a path's POSIX
side first, then its NT side, if that still differs from the record:

- recorded as ``stored`` (Samba served a blob of its own): the descriptor is set
  through Samba's VFS by :mod:`collectors.fs.samba_set_nt_acl`, run with the
  system's ``python3`` (Samba's bindings live there), so the blob carries the
  hash of the POSIX ACL Samba maps from it and Samba serves it at once;
- recorded as ``posix`` (no blob, or a stale one: Samba served the ACL it maps
  from POSIX): the blob is removed, so Samba maps from the restored POSIX ACL.

A step that fails (the interpreter or its Samba bindings missing, an
smb.conf that does not load or has no share holding the path, Samba denying
the write, a blob that cannot be removed) raises :class:`NtRestoreFailed`
with one line naming the path and Samba's reason, never a secret.

What was recorded as ``unreadable``, read over SMB from another server, or
holds a conditional (object or callback) ACE whose condition permwatch does
not keep, is not restorable: the revert refuses. The descriptor's control
flags (protected, auto-inherited) are not part of the record; the ACEs,
their order and their inheritance flags are.
"""

from __future__ import annotations

import errno
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from permwatch.events import NtAceFlag, NtAcl

SYSTEM_PYTHON = "/usr/bin/python3"
"""The interpreter Debian's ``python3-samba`` is built for."""
SET_SCRIPT = str(Path(__file__).with_name("samba_set_nt_acl.py"))
DEFAULT_SMB_CONF = "/etc/samba/smb.conf"

_SDDL_FLAGS = {
    NtAceFlag.OBJECT_INHERIT: "OI",
    NtAceFlag.CONTAINER_INHERIT: "CI",
    NtAceFlag.NO_PROPAGATE_INHERIT: "NP",
    NtAceFlag.INHERIT_ONLY: "IO",
    NtAceFlag.INHERITED: "ID",
}


class NotRestorable(ValueError):
    """The recorded NT ACL cannot be put back; the message says why."""


class NtRestoreFailed(RuntimeError):
    """Putting a recorded NT ACL back failed; the message is one line naming the path and why."""


SET_TIMEOUT_SECONDS = 60


def sddl_of(nt: NtAcl) -> str:
    """The recorded descriptor in SDDL (MS-DTYP 2.5.1): owner, group and DACL, numeric masks and SIDs."""
    if nt.source != "stored":
        raise NotRestorable(f"the NT ACL was recorded as {nt.source!r}, not as a descriptor of its own")
    if not nt.dacl_present:
        raise NotRestorable("the recorded descriptor has no DACL")
    parts = []
    if nt.owner:
        parts.append(f"O:{nt.owner}")
    if nt.group:
        parts.append(f"G:{nt.group}")
    if nt.dacl is None:
        parts.append("D:NO_ACCESS_CONTROL")  # a null DACL
        return "".join(parts)
    aces = []
    for ace in nt.dacl:
        if ace.conditional:
            raise NotRestorable(f"a conditional ACE for {ace.trustee}: its condition is not recorded")
        flags = "".join(code for flag, code in _SDDL_FLAGS.items() if flag in ace.flags)
        kind = "A" if ace.type == "allow" else "D"
        aces.append(f"({kind};{flags};0x{ace.mask:08x};;;{ace.trustee})")
    parts.append("D:" + "".join(aces))
    return "".join(parts)


def restorable(nt: NtAcl) -> str | None:
    """Why ``nt`` (a path's recorded NT ACL before the exposure) cannot be restored, or None."""
    if nt.source == "posix":
        return None
    try:
        sddl_of(nt)
    except NotRestorable as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class NtRestore:
    """Put ``before`` back on ``path`` (see the module docstring)."""

    path: str
    before: NtAcl
    xattr_name: str
    smb_conf: str
    python: str = SYSTEM_PYTHON
    """the interpreter with Samba's bindings that runs :mod:`collectors.fs.samba_set_nt_acl`"""

    def command(self) -> str:
        quoted = shlex.quote(self.path)
        if self.before.source == "posix":
            return f"setfattr -x {shlex.quote(self.xattr_name)} {quoted}"
        args = [self.python, SET_SCRIPT, self.smb_conf, self.path, sddl_of(self.before)]
        return " ".join(shlex.quote(arg) for arg in args)

    def apply(self) -> None:
        """Put the recorded ACL back; :class:`NtRestoreFailed` (one line) when that fails."""
        if self.before.source == "posix":
            try:
                os.removexattr(self.path, self.xattr_name, follow_symlinks=False)
            except OSError as exc:
                if exc.errno != errno.ENODATA:  # no blob already
                    why = exc.strerror or type(exc).__name__
                    raise NtRestoreFailed(
                        f"removing the NT ACL blob ({self.xattr_name}) of {self.path} failed: {why}"
                    ) from None
            return
        failed = f"setting the NT ACL of {self.path} through Samba (smb.conf {self.smb_conf}) failed"
        try:
            done = subprocess.run(
                [self.python, SET_SCRIPT, self.smb_conf, self.path, sddl_of(self.before)],
                capture_output=True,
                text=True,
                timeout=SET_TIMEOUT_SECONDS,
            )
        except FileNotFoundError:
            raise NtRestoreFailed(f"{failed}: {self.python} not found (Debian's python3 and python3-samba)") from None
        except subprocess.TimeoutExpired:
            raise NtRestoreFailed(f"{failed}: no answer within {SET_TIMEOUT_SECONDS} s") from None
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}, no message"])[-1]
            raise NtRestoreFailed(f"{failed}: {why[:300]}")
