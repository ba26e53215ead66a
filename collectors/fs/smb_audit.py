"""Who changed or opened a path over SMB: Samba's ``vfs_full_audit`` log, followed as an actor and open source.

Over SMB, fanotify sees only ``smbd``; Samba's ``full_audit`` module logs the
real SMB user, the client and the operation. Configure the share with::

    vfs objects = acl_xattr full_audit
    full_audit:prefix = permwatch|%u|%I|%S
    full_audit:success = fchmod fchown fset_nt_acl sys_acl_set_fd fsetxattr openat
    full_audit:failure = openat

and point ``[[fs]] smb_audit_log`` at where those lines go (a syslog file, or
smbd's own log with ``full_audit:syslog = false``). Lines look like
``permwatch|alice|10.0.0.7|share|fchmod|ok|/srv/share/x|0640`` and
``permwatch|alice|10.0.0.7|share|openat|ok|r|/srv/share/x``; anything else in
the file is skipped. The file is read from its end at start (older lines
describe changes already published) and followed through rotation.
:class:`SmbAuditActors` answers :meth:`actor_of` like the fanotify source, with
confidence ``smb_audit``; :class:`SmbAuditOpens` turns ``openat`` lines in
labelled folders into access records with ``how = "smb"`` (refused opens with
``granted = false``).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from collectors.fs.log_follow import LogActors, LogFollower
from collectors.fs.opens import REPEAT_SECONDS, RecentlySeen
from permwatch.events import Actor, FsAccessEvent

PREFIX = "permwatch"
CHANGE_OPS = frozenset({"fchmod", "fchown", "fset_nt_acl", "sys_acl_set_fd", "fsetxattr", "chmod", "chown"})
PERMISSION_XATTRS = ("security.NTACL", "system.posix_acl_access", "system.posix_acl_default")
MAX_REMEMBERED = 100_000


@dataclass(frozen=True, slots=True)
class AuditLine:
    user: str
    client: str
    share: str
    operation: str
    ok: bool
    path: str
    mode: str | None = None
    """an open's ``r``/``w``"""


def parse_line(line: str) -> AuditLine | None:
    """One audit line, or None when it is not one of ours (or not an operation we use)."""
    at = line.find(PREFIX + "|")
    if at < 0:
        return None
    fields = line[at:].rstrip("\n").split("|")
    if len(fields) < 7:
        return None
    _, user, client, share, operation, result = fields[:6]
    args = fields[6:]
    if operation == "openat":
        if len(args) < 2:
            return None
        path, mode = "|".join(args[1:]), args[0]
    elif operation in CHANGE_OPS:
        path, mode = args[0], None
        if operation == "fsetxattr" and (len(args) < 2 or args[1] not in PERMISSION_XATTRS):
            return None  # a user xattr, not a permission
        if operation == "fset_nt_acl" and path.endswith("]") and " [" in path:
            path = path.rsplit(" [", 1)[0]  # the descriptor summary full_audit appends
    else:
        return None
    if not path.startswith("/"):
        return None
    return AuditLine(user, client, share, operation, result == "ok", os.path.normpath(path), mode)


def actor_of_line(line: AuditLine) -> Actor:
    try:
        uid: int | None = pwd.getpwnam(line.user).pw_uid
    except KeyError:
        uid = None
    return Actor(name=line.user, uid=uid, process="smbd", confidence="smb_audit")


class SmbAuditActors(LogActors):
    """Names the SMB user behind a permission change from the audit log; see the module docstring."""

    def changes(self, lines: list[str]) -> Iterator[tuple[str, Actor]]:
        for raw in lines:
            line = parse_line(raw)
            if line is not None and line.operation != "openat" and line.ok:
                yield line.path, actor_of_line(line)


class SmbAuditOpens:
    """Access records of labelled folders from the audit log's ``openat`` lines (``how = "smb"``)."""

    def __init__(self, log_path: Path, *, source: str) -> None:
        self._log = LogFollower(log_path)
        self._source = source
        self._folders: set[str] = set()
        self._seen: RecentlySeen[tuple[str, str, str]] = RecentlySeen(REPEAT_SECONDS, MAX_REMEMBERED)

    def watch(self, folder: str) -> None:
        self._folders.add(folder)

    def unwatch(self, folder: str) -> None:
        self._folders.discard(folder)

    def created(self, directory: str) -> None:
        return None  # the log names every path: nothing to mark

    def _folder_of(self, path: str) -> str | None:
        while True:
            if path in self._folders:
                return path
            if path in ("/", ""):
                return None
            path = os.path.dirname(path)

    def take(self) -> list[FsAccessEvent]:
        out = []
        for raw in self._log.lines():
            line = parse_line(raw)
            if line is None or line.operation != "openat":
                continue
            folder = self._folder_of(line.path)
            if folder is None:
                continue
            seen = (line.user, line.client, line.path)
            if seen in self._seen and line.ok:
                continue  # one record per user, client and path a minute; refusals always
            self._seen.note(seen)
            actor = actor_of_line(line)
            out.append(
                FsAccessEvent(
                    path=line.path, folder=folder, actor=actor, how="smb", granted=line.ok, source=self._source
                )
            )
        return out

    def close(self) -> None:
        self._log.close()
