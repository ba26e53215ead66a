"""Who changed a permission, from the Linux audit log: the authoritative actor source where the operator enables it.

The kernel's audit subsystem records every chmod, chown and ACL write a rule
selects, with the *login* uid (``auid``): the person who logged in, still
named after ``sudo`` or ``su`` — fanotify can only name the process's uid
(``root`` then). auditd writes the records to its log; this source follows
that file (from its end at start, through rotation) and remembers, per path,
the latest change's actor with confidence ``audit``. The operator adds the
rule, keyed so permwatch reads only its own records (``audit_key``)::

    auditctl -a always,exit -F arch=b64 -F dir=/srv/share -k permwatch \
        -S chmod,fchmodat,chown,fchownat,lchown,setxattr,lsetxattr,removexattr,lremovexattr

(``fchmod``/``fsetxattr`` on an open descriptor carry no path, so they are
not attributed by this source.) An event is the lines sharing one serial
``msg=audit(TIME:SERIAL)``: the ``SYSCALL`` record (result, ``auid``, ``uid``,
``pid``, ``comm``, ``key``), ``CWD`` and the ``PATH`` records; the changed
object is the ``PATH`` record of ``nametype=NORMAL``, relative names joined
to the ``CWD``. Values auditd writes in hex (a name with a space) are
decoded. A failed call, another key, or a path outside the roots is skipped.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from collectors.fs.log_follow import LogActors
from permwatch.events import Actor

DEFAULT_LOG = Path("/var/log/audit/audit.log")
DEFAULT_KEY = "permwatch"
UNSET_AUID = 4294967295
"""``auid`` of a process no login set one for (a daemon, or a machine without pam_loginuid)."""
MAX_REMEMBERED = 100_000
_RECORD = re.compile(r"^type=(\w+) msg=audit\([\d.]+:(\d+)\): ?(.*)$")
_FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')


@dataclass(frozen=True, slots=True)
class AuditChange:
    """One audited permission change: the path and who made it."""

    path: str
    auid: int | None
    uid: int | None
    pid: int | None
    comm: str | None


def fields(text: str) -> dict[str, str]:
    """A record's ``key=value`` fields, each value exactly as written: quoted or hex-encoded (auditd's form for
    odd bytes); :func:`name_value` decodes one."""
    return {key: value for key, value in _FIELD.findall(text)}


def name_value(raw: str) -> str | None:
    """A name field as auditd writes it: ``"text"``, hex bytes when it holds a space or odd byte, ``(null)``."""
    if raw.startswith('"') and raw.endswith('"'):
        return raw[1:-1]
    if raw == "(null)" or not raw:
        return None
    try:
        return bytes.fromhex(raw).decode("utf-8", errors="replace")
    except ValueError:
        return raw


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


Record = tuple[str, dict[str, str], str]
"""A record's type, its fields and its line."""


def events(lines: Iterable[str]) -> Iterator[list[Record]]:
    """The records of ``lines`` grouped by event (auditd writes an event's records together, in order)."""
    serial: str | None = None
    records: list[Record] = []
    for line in lines:
        found = _RECORD.match(line.strip())
        if found is None:
            continue
        kind, number, text = found.groups()
        if number != serial and records:
            yield records
            records = []
        serial = number
        records.append((kind, fields(text), line))
    if records:
        yield records


def change_of(records: list[Record], key: str) -> AuditChange | None:
    """The permission change one event records under ``key``, or None (another key, a failed call, no path)."""
    syscall = next((f for kind, f, _ in records if kind == "SYSCALL"), None)
    if syscall is None or name_value(syscall.get("key", "")) != key or syscall.get("success") != "yes":
        return None
    cwd = next((name_value(f.get("cwd", "")) for kind, f, _ in records if kind == "CWD"), None)
    target = next((f for kind, f, _ in records if kind == "PATH" and f.get("nametype") == "NORMAL"), None)
    name = name_value(target.get("name", "")) if target is not None else None
    if name is None:
        return None
    if not name.startswith("/"):
        if not cwd:
            return None
        name = os.path.join(cwd, name)
    auid = _int(syscall.get("auid"))
    return AuditChange(
        path=os.path.normpath(name),
        auid=None if auid == UNSET_AUID else auid,
        uid=_int(syscall.get("uid")),
        pid=_int(syscall.get("pid")),
        comm=name_value(syscall.get("comm", "")),
    )


def actor_of_change(change: AuditChange) -> Actor:
    """The person behind it: the login uid when a login set one (``sudo`` keeps it), else the process's uid."""
    uid = change.auid if change.auid is not None else change.uid
    try:
        name: str | None = pwd.getpwuid(uid).pw_name if uid is not None else None
    except KeyError:
        name = None
    process = change.comm[:64] if change.comm else None
    return Actor(name=name, uid=uid, process=process, pid=change.pid, confidence="audit")


class LinuxAuditActors(LogActors):
    """Names who changed a path from auditd's log; see the module docstring."""

    def __init__(self, log_path: Path = DEFAULT_LOG, *, key: str = DEFAULT_KEY) -> None:
        super().__init__(log_path, capacity=MAX_REMEMBERED)
        self._key = key
        self._pending: list[str] = []
        """the lines of the last event read, until its PROCTITLE (its last record) or the next event shows up"""

    def changes(self, lines: list[str]) -> Iterator[tuple[str, Actor]]:
        found = list(events(self._pending + lines))
        self._pending = []
        if found and found[-1][-1][0] != "PROCTITLE":  # its PATH records may not be written yet
            self._pending = [line for _, _, line in found.pop()]
        for records in found:
            change = change_of(records, self._key)
            if change is not None:
                yield change.path, actor_of_change(change)
