"""The remote SMB collector: one share's folders as ``fs.permission`` events, read over the network.

`SmbCollector.run` keeps a `ShareLoop` (baseline, watches, rescans, reconcile, reconnect) on the share and turns
what it reports into the contract's events: each folder as ``fs.permission`` with ``acl_kind = "nt"`` and an NT
ACL of source ``smb`` (the server's own check decides alone; no POSIX part), under ``path_prefix``; a folder gone
as ``deleted``; each full walk as ``fs.scan_completed`` of every root (``baseline`` the first time, ``reconcile``
after). Events go out in batches per unit and are flushed after each walk and each round of changes.

Before each walk the share's own ACL is read over srvsvc (`srvsvc.py`) and, when it changed, published as an
``smb.share`` event of the share's published path: the processor's share gate then narrows the readers of
everything below it, as for a local Samba share (no ``valid users``/``invalid users``: SMB does not tell them).
Servers give a share's ACL to administrators only; for another account the event carries why (the processor
then narrows nobody and says so) and a warning is logged once.

What is not read: files (a file whose own ACL differs from its folder's is not seen; labels govern folders), the
SACL. A folder the service account
cannot open or whose descriptor does not decode is published with the reason in place of its ACL (the processor
then counts everybody as a reader, each grant saying why: never silently allowed) and named once in a warning:
give the account read access (READ_CONTROL and List Folder) to the whole share.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Literal

from collectors.fs.readers.ntacl import nt_acl_of
from collectors.labels import LabelPolicy
from collectors.ntacl import NtAclError, decode_security_descriptor
from collectors.runner import BusEmitter
from collectors.smb.loop import LoopOptions, ShareLoop
from collectors.smb.settings import SmbCollectorConfig
from collectors.smb.share import RemoteFolder, SmbShare
from collectors.smb.srvsvc import ShareAclReader
from permwatch.events import (
    FsKind,
    FsPermissionEvent,
    Label,
    LabelAssigned,
    NtAce,
    NtAcl,
    ObjectType,
    SambaShare,
    ScanCompleted,
)

log = logging.getLogger("permwatch.collectors.smb")


class SmbCollector:
    """Publishes one ``[[smb]]`` share's folders; `run` until ``stop`` is set."""

    def __init__(self, settings: SmbCollectorConfig, emitter: BusEmitter, labels: LabelPolicy | None = None) -> None:
        self.settings = settings
        self._emitter = emitter
        self._labels = labels
        self._labelled: dict[str, Label] = {}
        self._password = settings.password()
        self._bypass = settings.traverse == "bypass"
        self._scans = 0
        self._scan_started = datetime.now(UTC)
        self._seen = 0
        self._changed = 0
        self._warned: set[str] = set()
        self._share_acl: tuple[tuple[NtAce, ...] | None, str | None] | None = None
        self.unreadable = 0
        self._share_acl_reader = ShareAclReader(  # its session kept from one reconcile to the next
            settings.server,
            settings.share,
            settings.username,
            self._password,
            port=settings.port,
            encrypt=settings.encrypt,
            auth=settings.auth,
        )
        self.loop = ShareLoop(
            self._share,
            self,
            LoopOptions(
                in_flight=settings.in_flight,
                reconcile_seconds=settings.reconcile_seconds,
                roots=tuple(settings.roots),
                connections=settings.connections,
            ),
        )

    def run(self, stop: threading.Event) -> None:
        log.info("smb collector %s: following %s as %s", self.settings.collector_id, self._unc, self.settings.username)
        try:
            self.loop.run(stop)
        finally:
            self._share_acl_reader.close()

    @property
    def _unc(self) -> str:
        return f"\\\\{self.settings.server}\\{self.settings.share}"

    def _share(self) -> SmbShare:
        s = self.settings
        return SmbShare(
            s.server,
            s.share,
            s.username,
            self._password,
            port=s.port,
            encrypt=s.encrypt,
            auth=s.auth,
            credits=max(64, s.in_flight * 4 + 16),
        )

    # -- FolderSink ----------------------------------------------------------------------------------------------

    def reconciling(self) -> None:
        """The share's own ACL, read over srvsvc before each walk; published when it changed."""
        s = self.settings
        read = self._share_acl_reader.read()  # `SmbError` (one line) when no session: the loop reconnects
        acl, error = share_acl_of(read.descriptor, read.error)
        if error is not None and "share-acl" not in self._warned:
            self._warned.add("share-acl")
            log.warning(
                "smb collector %s: the share ACL of %s is not read (%s): readers are not narrowed by it",
                s.collector_id,
                self._unc,
                error,
            )
        if (acl, error) == self._share_acl:
            return
        self._share_acl = (acl, error)
        self._emitter.emit(
            SambaShare(name=s.share, path=s.published_path(""), acl=acl, error=error, source=s.collector_id)
        )

    def folder(self, folder: RemoteFolder, observed_at: float, *, new: bool) -> None:
        self._seen += 1
        path = self.settings.published_path(folder.path)
        nt = self._nt_acl(path, folder)
        kind = FsKind.BASELINE if self._scans == 0 else FsKind.CREATED if new else FsKind.CHANGED
        self._changed += 1
        self._label(path)
        self._emitter.emit(
            FsPermissionEvent(
                kind=kind,
                path=path,
                object_type=ObjectType.DIRECTORY,
                acl_kind="nt",
                nt_acl=nt,
                observed_at=_time(observed_at),
                source=self.settings.collector_id,
            )
        )

    def removed(self, path: str, observed_at: float) -> None:
        published = self.settings.published_path(path)
        if self._labelled.pop(published, None) is not None:
            self._emitter.emit(LabelAssigned(path=published, label=None, source=self.settings.collector_id))
        self._emitter.emit(
            FsPermissionEvent(
                kind=FsKind.DELETED,
                path=self.settings.published_path(path),
                observed_at=_time(observed_at),
                source=self.settings.collector_id,
            )
        )

    def scanned(self, observed_at: float) -> None:
        reason: Literal["baseline", "reconcile"] = "baseline" if self._scans == 0 else "reconcile"
        seconds = max(0.0, observed_at - self._scan_started.timestamp())
        for root in self.settings.roots:
            self._emitter.emit(
                ScanCompleted(
                    root=self.settings.published_path(root),
                    reason=reason,
                    paths_seen=self._seen,
                    paths_changed=self._changed,
                    seconds=seconds,
                    observed_at=_time(observed_at),
                    source=self.settings.collector_id,
                )
            )
        self._scans += 1
        self._seen = self._changed = 0
        self._scan_started = datetime.now(UTC)
        self.flush()

    def flush(self) -> None:
        self._emitter.flush()

    def _label(self, path: str) -> None:
        """Labels of remote folders come from the policy's globs alone (no xattr or marker file is read)."""
        if self._labels is None:
            return
        label = self._labels.label_by_rules(path)
        if label == self._labelled.get(path):
            return
        if label is None:
            del self._labelled[path]
        else:
            self._labelled[path] = label
        self._emitter.emit(LabelAssigned(path=path, label=label, source=self.settings.collector_id))

    def _nt_acl(self, path: str, folder: RemoteFolder) -> NtAcl:
        """The descriptor as the contract has it, or, when it could not be read, the reason in its place."""
        why = folder.error or "no descriptor"
        if folder.descriptor is not None:
            try:
                served = nt_acl_of(decode_security_descriptor(folder.descriptor)).model_dump()
                return NtAcl.model_validate({**served, "source": "smb", "bypass_traverse": self._bypass})
            except NtAclError as exc:
                why = f"descriptor does not decode: {exc}"
        self.unreadable += 1
        if path not in self._warned:
            self._warned.add(path)
            log.warning(
                "smb collector %s: %s: NT ACL unreadable (%s): judged readable by everybody until read",
                self.settings.collector_id,
                path,
                why,
            )
        return NtAcl(source="smb", error=why[:300], bypass_traverse=self._bypass)


def share_acl_of(descriptor: bytes | None, error: str | None) -> tuple[tuple[NtAce, ...] | None, str | None]:
    """The share ACL as ``smb.share`` carries it: its DACL's ACEs (a NULL DACL admits all: Everyone FULL, as
    Samba serves a share with none stored), or why there is none. A server that answers without a descriptor
    (Samba does so for an account that is not root) has not given it."""
    if error is not None:
        return None, error[:300]
    if descriptor is None:
        return None, "the server sent no share security descriptor (it gives one to administrators only)"
    try:
        served = nt_acl_of(decode_security_descriptor(descriptor))
    except NtAclError as exc:
        return None, f"share descriptor does not decode: {exc}"[:300]
    if not served.dacl_present or served.dacl is None:
        return (NtAce(type="allow", flags=(), mask=0x001F01FF, trustee="S-1-1-0"),), None
    return served.dacl, None


def _time(when: float) -> datetime:
    return datetime.fromtimestamp(when, UTC)
