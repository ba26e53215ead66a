"""The static directory source: users and groups from a YAML file, watched for edits.

The file looks like::

    users:
      - {name: anna, uid: 1001, primary_group: ledningsgrupp}
      - {name: bo, uid: 1002, gid: 20002, disabled: false}
    groups:
      - {name: ledningsgrupp, gid: 20001, members: [anna], groups: []}
      - {name: alla, gid: 20002, members: [bo], groups: [enhet]}

``groups`` lists nested groups. On start the whole directory is published;
afterwards each edit (noticed by polling the file's identity, which also
catches editors that replace the file) publishes only the users and groups
that changed, and deletions. A broken edit is logged with the file and the
reason and ignored: the last good directory stays in force. Its sync state
(ok or failed, when it last succeeded, how many users and groups) is exported
through :meth:`permwatch.metrics.Metrics.directory_synced`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collectors.directory_diff import diff
from permwatch.config import DirectoryFileConfig
from permwatch.events import DirectoryGroup, DirectoryUser
from permwatch.metrics import Metrics
from permwatch.transport.spool import RecordDropped

log = logging.getLogger("permwatch.collectors.directory")
POLL_SECONDS = 0.2


class _UserEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    uid: int | None = None
    gid: int | None = None
    primary_group: str | None = None
    disabled: bool = False


class _GroupEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    gid: int | None = None
    members: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)


class _DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[_UserEntry] = Field(default_factory=list)
    groups: list[_GroupEntry] = Field(default_factory=list)


class DirectoryFileError(Exception):
    pass


def load_directory(path: Path) -> dict[str, DirectoryUser | DirectoryGroup]:
    """Parse the file into principal states keyed like the bus keys them; raise :class:`DirectoryFileError`."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise DirectoryFileError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise DirectoryFileError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    try:
        parsed = _DirectoryFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise DirectoryFileError(f"{path}: key '{loc}': {err['msg']}") from None
    gids = {g.name: g.gid for g in parsed.groups}
    states: dict[str, DirectoryUser | DirectoryGroup] = {}
    for u in parsed.users:
        primary = u.gid if u.gid is not None else gids.get(u.primary_group or "")
        if u.primary_group is not None and primary is None:
            raise DirectoryFileError(f"{path}: user {u.name}: primary_group {u.primary_group!r} has no gid")
        user = DirectoryUser(name=u.name, uid=u.uid, primary_gid=primary, disabled=u.disabled)
        states[user.key] = user
    for g in parsed.groups:
        group = DirectoryGroup(name=g.name, gid=g.gid, member_users=tuple(g.members), member_groups=tuple(g.groups))
        states[group.key] = group
    return states


class DirectoryFileCollector:
    def __init__(self, config: DirectoryFileConfig, emitter: Any, *, metrics: Metrics | None = None) -> None:
        self.config = config
        self.emitter = emitter
        self.metrics = metrics
        self.current: dict[str, DirectoryUser | DirectoryGroup] = {}
        self._identity: tuple[int, int, int] | None = None
        self._dropping = False

    def _file_identity(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.config.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self) -> int:
        """Publish what changed since the last load; returns the number of events."""
        self._identity = self._file_identity()
        new = load_directory(self.config.path)
        events = diff(self.current, new, source=self.config.source)
        for event in events:
            self.emitter.emit(event)
        self.emitter.flush()
        self.current = new
        if self.metrics is not None:
            users = sum(1 for state in new.values() if isinstance(state, DirectoryUser))
            self.metrics.directory_synced(self.config.source, users=users, groups=len(new) - users, at=time.time())
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
            if self._file_identity() == self._identity:
                continue
            try:
                self._load_or_retry()
            except DirectoryFileError as exc:
                log.error("%s; keeping the last good directory", exc)
                if self.metrics is not None:
                    self.metrics.directory_sync_failed(self.config.source)
