"""The static directory source: users and groups from a YAML file, watched for edits.

The file looks like (``deploy/directory.example.yaml`` is a commented one)::

    users:
      - {name: anna, uid: 1001, gid: ledningsgrupp}
      - {name: bo, uid: 1002, gid: 20002, disabled: false}
    groups:
      - {name: ledningsgrupp, gid: 20001, members: [anna], groups: []}
      - {name: alla, gid: 20002, members: [bo], groups: [enhet]}
      - {name: enhet, gid: 20003}

A user's primary group (``gid``) is a group's name or a number; ``primary_group`` is an older spelling of the name.
Users and groups may carry a Windows ``sid`` (for NT ACLs on Samba shares); a user's ``primary_group_sid`` defaults
to the SID of the group its ``gid`` names. A group's ``members`` are users and its ``groups`` the groups nested
into it. A name in ``members`` that is no user but a group is nested too, the way an LDAP group's ``member`` may
name a group, and logged, so nesting written there is never lost; a name in ``groups`` that is a user, a name that
is neither, a name or a numeric id used twice, and a key given twice in one entry are errors naming the file, the
line and the entry. On start the whole directory is published; afterwards each edit (noticed by polling the file's
identity, which also catches editors that replace the file) publishes only the users and groups that changed, and
deletions. A broken edit is logged once with the file, line and reason and ignored: the last good directory stays
in force. Its sync state (ok or failed, when it last succeeded, how many users and groups) is exported through
:meth:`permwatch.metrics.Metrics.directory_synced`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collectors.directory_diff import diff
from collectors.directory_settings import DirectoryFileConfig
from collectors.metrics import CollectorMetrics
from collectors.spool import RecordDropped
from permwatch.events import DirectoryGroup, DirectoryUser, Sid
from permwatch.metrics import Metrics

log = logging.getLogger("permwatch.collectors.directory")
POLL_SECONDS = 0.2


class _UserEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    uid: int | None = None
    gid: int | str | None = Field(default=None, description="the primary group: a group's name or a number")
    primary_group: str | None = Field(default=None, description="the primary group by name (same as a named gid)")
    disabled: bool = False
    sid: Sid | None = Field(default=None, description="the account's Windows SID, for NT ACLs on Samba shares")
    primary_group_sid: Sid | None = Field(
        default=None, description="its primary group's SID (default: the SID of the group gid names, if it has one)"
    )


class _GroupEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    gid: int | None = None
    members: list[str] = Field(default_factory=list, description="users (a group named here is nested)")
    groups: list[str] = Field(default_factory=list, description="groups nested into this one")
    sid: Sid | None = Field(default=None, description="the group's Windows SID, for NT ACLs on Samba shares")


class _DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[_UserEntry] = Field(default_factory=list)
    groups: list[_GroupEntry] = Field(default_factory=list)


class DirectoryFileError(Exception):
    """A mistake in the directory file: the message is one line naming the file, the line and the entry."""


Location = tuple[str | int, ...]


@dataclass(frozen=True)
class ParsedDirectory:
    """The principal states of a directory file, keyed like the bus keys them, and what was read generously."""

    states: dict[str, DirectoryUser | DirectoryGroup]
    notes: tuple[str, ...] = ()
    """One line each for what the file says in an unusual way but means clearly (a group under ``members``)."""


class _Lines:
    """Where each entry of the file starts (1-based), from the YAML composer's node marks."""

    def __init__(self, path: Path, root: yaml.Node | None) -> None:
        self.path = path
        self.lines: dict[Location, int] = {}
        self.repeated: list[Location] = []
        """Keys given twice in one mapping: YAML keeps the last silently, so they are refused."""
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, loc: Location) -> None:
        self.lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = str(key.value)
                if name in seen:
                    self.repeated.append((*loc, name))
                seen.add(name)
                self._walk(value, (*loc, name))
                self.lines[(*loc, name)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*loc, i))

    def at(self, loc: Location) -> str:
        """``<file>:<line>: key '<dotted key>'`` for the entry, or its nearest enclosing entry's line."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                break
        key = ".".join(str(part) for part in loc) or "<top>"
        return f"{self.path}:{line}: key '{key}'" if line is not None else f"{self.path}: key '{key}'"

    def error(self, loc: Location, message: str) -> DirectoryFileError:
        return DirectoryFileError(f"{self.at(loc)}: {message}")


def _compose(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DirectoryFileError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise DirectoryFileError(f"{path}: not UTF-8 (byte {exc.start})") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    except yaml.YAMLError as exc:
        raise DirectoryFileError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()


def parse_directory(path: Path) -> ParsedDirectory:
    """Parse and check the file; raise :class:`DirectoryFileError` on the first mistake."""
    raw, root = _compose(path)
    lines = _Lines(path, root)
    if lines.repeated:
        raise lines.error(lines.repeated[0], "given twice; only one can count")
    try:
        parsed = _DirectoryFile.model_validate(raw or {})
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise lines.error(tuple(err["loc"]), " ".join(msg.split())) from None
    users = _unique_names_and_ids(parsed.users, "users", "user", "uid", lines)
    groups = _unique_names_and_ids(parsed.groups, "groups", "group", "gid", lines)

    states: dict[str, DirectoryUser | DirectoryGroup] = {}
    for i, u in enumerate(parsed.users):
        primary = _primary_gid(u, i, parsed, groups, lines)
        primary_sid = u.primary_group_sid
        named = u.primary_group or (u.gid if isinstance(u.gid, str) and not u.gid.strip().isdigit() else None)
        if primary_sid is None and named is not None:
            primary_sid = parsed.groups[groups[named]].sid
        user = DirectoryUser(
            name=u.name,
            uid=u.uid,
            primary_gid=primary,
            disabled=u.disabled,
            sid=u.sid,
            primary_group_sid=primary_sid,
        )
        states[user.key] = user
    notes: list[str] = []
    for i, g in enumerate(parsed.groups):
        member_users: list[str] = []
        member_groups: list[str] = []
        for j, name in enumerate(g.members):
            if name in users:
                member_users.append(name)
            elif name in groups:
                member_groups.append(name)  # as an LDAP group's `member` may name a group: nested, not lost
                notes.append(
                    f"{lines.at(('groups', i, 'members', j))}: {name!r} is a group: nested into {g.name!r}"
                    " as if listed under its `groups`"
                )
            else:
                raise lines.error(("groups", i, "members", j), f"{name!r} names no user or group in this file")
        for j, name in enumerate(g.groups):
            if name in groups:
                member_groups.append(name)
            elif name in users:
                raise lines.error(
                    ("groups", i, "groups", j), f"{name!r} is a user, not a group: list users under `members`"
                )
            else:
                raise lines.error(("groups", i, "groups", j), f"{name!r} names no group in this file")
        group = DirectoryGroup(
            name=g.name,
            gid=g.gid,
            member_users=tuple(dict.fromkeys(member_users)),
            member_groups=tuple(dict.fromkeys(member_groups)),
            sid=g.sid,
        )
        states[group.key] = group
    return ParsedDirectory(states, tuple(notes))


def _unique_names_and_ids(
    entries: Sequence[Any], section: str, what: str, id_key: str, lines: _Lines
) -> dict[str, int]:
    """Refuse a name or a numeric id given twice in ``section``; the entries' index by name."""
    names: dict[str, int] = {}
    ids: dict[int, int] = {}
    for i, entry in enumerate(entries):
        if entry.name in names:
            raise lines.error(
                (section, i, "name"), f"{what} {entry.name!r} is listed twice (also entry {names[entry.name]})"
            )
        names[entry.name] = i
        number = getattr(entry, id_key)
        if number is not None and number in ids:
            other = entries[ids[number]].name
            raise lines.error(
                (section, i, id_key), f"{id_key} {number} of {entry.name!r} is also the {id_key} of {other!r}"
            )
        if number is not None:
            ids[number] = i
    return names


def _primary_gid(user: _UserEntry, i: int, parsed: _DirectoryFile, groups: dict[str, int], lines: _Lines) -> int | None:
    """A user's primary gid: ``gid`` as a number, or the gid of the group ``gid`` or ``primary_group`` names."""
    by_number: int | None = None
    by_name: tuple[str, str] | None = None  # (key, group name)
    if isinstance(user.gid, int):
        by_number = user.gid
    elif isinstance(user.gid, str):
        if user.gid.strip().isdigit():  # a quoted number is still a number
            by_number = int(user.gid)
        else:
            by_name = ("gid", user.gid)
    if user.primary_group is not None:
        if by_name is not None and by_name[1] != user.primary_group:
            raise lines.error(
                ("users", i, "primary_group"),
                f"names {user.primary_group!r} but gid names {by_name[1]!r}: give the primary group once",
            )
        by_name = ("primary_group", user.primary_group)
    if by_name is None:
        return by_number
    key, name = by_name
    index = groups.get(name)
    if index is None:
        raise lines.error(("users", i, key), f"primary group {name!r} names no group in this file")
    gid = parsed.groups[index].gid
    if gid is None:
        raise lines.error(("users", i, key), f"primary group {name!r} has no gid")
    if by_number is not None and by_number != gid:
        raise lines.error(("users", i, "gid"), f"gid {by_number} but primary_group {name!r} has gid {gid}")
    return gid


def load_directory(path: Path) -> dict[str, DirectoryUser | DirectoryGroup]:
    """Parse the file into principal states keyed like the bus keys them; raise :class:`DirectoryFileError`."""
    return parse_directory(path).states


class DirectoryFileCollector:
    def __init__(self, config: DirectoryFileConfig, emitter: Any, *, metrics: Metrics | None = None) -> None:
        self.config = config
        self.emitter = emitter
        self.metrics = metrics
        self.current: dict[str, DirectoryUser | DirectoryGroup] = {}
        self._identity: tuple[int, int, int] | None = None
        self._dropping = False
        self._failure: str | None = None
        """The error the file's current content gave, logged once; None while the file is good."""
        self._notes: tuple[str, ...] = ()

    def _file_identity(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.config.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self) -> int:
        """Publish what changed since the last load; returns the number of events."""
        self._identity = self._file_identity()
        parsed = parse_directory(self.config.path)
        new = parsed.states
        if parsed.notes != self._notes:
            for note in parsed.notes:
                log.warning("%s", note)
            self._notes = parsed.notes
        events = diff(self.current, new, source=self.config.source)
        for event in events:
            self.emitter.emit(event)
        self.emitter.flush()
        self.current = new
        if self.metrics is not None:
            users = sum(1 for state in new.values() if isinstance(state, DirectoryUser))
            self.metrics.part(CollectorMetrics).directory_synced(
                self.config.source, users=users, groups=len(new) - users, at=time.time()
            )
        if events:
            log.info("directory %s: published %d change(s)", self.config.path, len(events))
        return len(events)

    def _load_or_retry(self) -> None:
        """:meth:`load`; when the bus drops an event (a full spool) the published copy is left as it was
        and the file is read again at the next poll, so the changes go out once the spool takes them."""
        try:
            self.load()
        except RecordDropped:
            if not self._dropping:
                log.warning("directory %s: the collector's spool is full; publishing again later", self.config.path)
            self._dropping = True
            self._identity = None
        else:
            if self._dropping:
                log.info("directory %s: published again after the spool was full", self.config.path)
            self._dropping = False

    def run(self, stop: threading.Event) -> None:
        self._load_or_retry()
        while self.config.watch and not stop.wait(POLL_SECONDS):
            self.poll()

    def poll(self) -> None:
        """Read the file again when it changed since it was last read; a mistake keeps the last good directory."""
        if self._file_identity() == self._identity:
            return
        try:
            self._load_or_retry()
        except DirectoryFileError as exc:
            if str(exc) != self._failure:  # once per mistake, not once per save of the same mistake
                log.error("%s; keeping the last good directory", exc)
            self._failure = str(exc)
            if self.metrics is not None:
                self.metrics.part(CollectorMetrics).directory_sync_failed(self.config.source)
        else:
            if self._failure is not None:
                log.info("directory %s: good again, in force", self.config.path)
            self._failure = None
