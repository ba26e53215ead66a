"""The revert executor: put a folder's permissions back as they were just before an exposure opened.

It lives with the filesystem collector because it must run where the files
are, and it meets the other stages only on the bus: it reads the record
(the exposure's events on ``exposures``, every recorded state of the folder's
paths on ``fs``) and applies with the kernel (``os.chown``, ``os.chmod`` and the
collector's own ACL xattr writer, :func:`collectors.acl.write_acl`). The
collector then sees the change like any other and the processor closes the
exposure through the normal path; nothing here publishes an exposure event.

The plan: every path at or under the folder with a recorded change at or
after the exposure's ``opened_at`` gets back its last recorded state before
it (owner, group, mode, access ACL, default ACL), as exact ``chown``/
``setfacl``/``chmod`` commands (what ``--dry-run`` prints). It refuses, and
touches nothing, when the label's ``remediation`` is ``off``, when the
exposure is closed, when the record holds a change of the folder after the
exposure's latest event (the folder changed since: someone else may be at
work, and the state to restore is no longer clear), or when the kernel's
state of a path differs from the latest record of it (a change the collector
has not published yet). On a Samba share read with the ``ntacl`` reader the
Windows ACL is restored too, after the POSIX side (:mod:`collectors.fs.nt_revert`).
Each step is a decision on ``decisions``:
``revert_requested`` (who asked), then ``reverted`` (the commands),
``revert_refused`` (why) or ``revert_failed`` (a change the kernel or Samba
refused: one line naming the path and the reason, what was restored before
it, and the commands made).

:class:`RevertWatcher` runs in the collector role and carries out what others
ask for: a ``revert_requested`` from the Slack button (``remediation`` at
least ``on-command``), and every new exposure of a label with ``remediation =
"automatic"`` (except what a first scan finds: pre-existing is reported, not
reverted behind anyone's back).
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Literal, TextIO

from collectors.acl import DEFAULT_NAMES, read_acl, read_default_acl, write_acl
from collectors.fs.nt_revert import DEFAULT_SMB_CONF, NtRestore, NtRestoreFailed, restorable
from collectors.fs.readers.ntacl import XATTR_NAME, NtAclReader
from permwatch.config import Config
from permwatch.events import (
    TOPIC_DECISIONS,
    TOPIC_EXPOSURES,
    TOPIC_FS,
    AclEntry,
    AclTag,
    Decision,
    DecisionAction,
    DecodeError,
    ExposureEvent,
    ExposureStatus,
    FsKind,
    FsPermissionEvent,
    NtAcl,
    decode,
    encode,
    unbatched,
    utcnow,
)
from permwatch.transport.base import Bus

log = logging.getLogger("permwatch.collector.revert")

Via = Literal["cli", "slack", "automatic"]

_SHORT = {AclTag.USER_OBJ: "u", AclTag.USER: "u", AclTag.GROUP_OBJ: "g", AclTag.GROUP: "g"}
_SHORT |= {AclTag.MASK: "m", AclTag.OTHER: "o"}


def acl_text(entries: Iterable[AclEntry]) -> str:
    """``setfacl`` short text with numeric qualifiers: ``u::rwx,g::r-x,g:32302:r-x,m::r-x,o::---``."""
    return ",".join(
        f"{_SHORT[e.tag]}:{'' if e.qualifier is None else e.qualifier}:"
        + "".join(ch if e.perms & bit else "-" for ch, bit in (("r", 4), ("w", 2), ("x", 1)))
        for e in entries
    )


def _bare(entries: Iterable[AclEntry]) -> tuple[tuple[str, int | None, int], ...]:
    """An ACL without names, in a fixed order: what the kernel holds."""
    return tuple(sorted((e.tag.value, e.qualifier, e.perms) for e in entries))


@dataclass(frozen=True)
class PathState:
    owner: int
    group: int
    mode: int
    acl: tuple[tuple[str, int | None, int], ...]
    default_acl: tuple[tuple[str, int | None, int], ...]
    nt: NtAcl | None = None
    """the Windows ACL Samba serves, where the folder's root is read with the ``ntacl`` reader"""


def recorded_state(event: FsPermissionEvent) -> PathState | None:
    if event.kind is FsKind.DELETED or event.mode is None or event.owner is None or event.group is None:
        return None
    nt = event.nt_acl if event.acl_kind == "nt" else None
    return PathState(event.owner.id, event.group.id, event.mode, _bare(event.acl), _bare(event.default_acl), nt)


def kernel_state(path: str, nt_reader: NtAclReader | None = None) -> PathState | None:
    try:
        st = os.lstat(path)
        default = read_default_acl(path) if os.path.isdir(path) and not os.path.islink(path) else ()
        access = _bare(read_acl(path, mode=st.st_mode))
        nt = None
        if nt_reader is not None:
            served = nt_reader.read(path)
            nt = served.nt_acl if served is not None else None
        return PathState(st.st_uid, st.st_gid, st.st_mode & 0o7777, access, _bare(default), nt)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class NtSetup:
    """How the folder's ``[[fs]]`` root reads NT ACLs: the reader, its xattr and Samba's smb.conf."""

    reader: NtAclReader
    xattr_name: str
    smb_conf: str


def nt_setup_of(config: Config, folder: str) -> NtSetup | None:
    """The NT-ACL setup of the ``[[fs]]`` root holding ``folder``, or None where POSIX is all it reads."""
    for fs in config.stage_settings("fs"):
        if fs.acl_reader != "ntacl":
            continue
        for root in map(str, fs.roots):
            if folder == root or folder.startswith(root.rstrip("/") + "/"):
                options = dict(fs.acl_reader_options)
                xattr = options.get("xattr_name", XATTR_NAME)
                reader = NtAclReader(DEFAULT_NAMES, xattr_name=xattr)
                return NtSetup(reader, xattr, str(fs.smb_conf or DEFAULT_SMB_CONF))
    return None


@dataclass
class PathRevert:
    path: str
    before: FsPermissionEvent
    now: PathState
    nt: NtRestore | None = None
    """the Windows ACL to put back after the POSIX side, when it differs from the recorded one"""

    def posix_steps(self) -> list[tuple[str | None, Callable[[], None]]]:
        """The POSIX side's changes in order: each the command showing it (None: not shown) and the call making it."""
        before = self.before
        assert before.owner is not None and before.group is not None and before.mode is not None
        owner, group, mode = before.owner.id, before.group.id, before.mode
        quoted = shlex.quote(self.path)
        steps: list[tuple[str | None, Callable[[], None]]] = []
        if (self.now.owner, self.now.group) != (owner, group):
            chown = partial(os.chown, self.path, owner, group, follow_symlinks=False)
            steps.append((f"chown -h {owner}:{group} {quoted}", chown))
        if self.now.acl != _bare(before.acl):
            steps.append((f"setfacl --set {acl_text(before.acl)} {quoted}", partial(write_acl, self.path, before.acl)))
        if self.now.default_acl != _bare(before.default_acl):
            default = partial(write_acl, self.path, before.default_acl, default=True)
            if before.default_acl:
                steps.append((f"setfacl -d --set {acl_text(before.default_acl)} {quoted}", default))
            else:
                steps.append((f"setfacl -k {quoted}", default))
        # always, after the ACL: the mode's special bits, and the mask as it was; shown when it changes something
        changes_mode = self.now.mode != mode or self.now.acl != _bare(before.acl)
        steps.append((f"chmod {mode:04o} {quoted}" if changes_mode else None, partial(os.chmod, self.path, mode)))
        return steps

    def commands(self) -> list[str]:
        """The exact changes, as the commands that would make them."""
        out = [command for command, _ in self.posix_steps() if command is not None]
        if self.nt is not None:
            out.append(self.nt.command())
        return out

    def apply(self, done: list[str] | None = None) -> None:
        """Make the changes in order, appending each command made to ``done``; the first failure raises
        (``OSError`` on the POSIX side, :class:`NtRestoreFailed` on the NT side)."""
        done = [] if done is None else done
        for command, change in self.posix_steps():
            change()
            if command is not None:
                done.append(command)
        if self.nt is not None:
            self.nt.apply()  # last: Samba hashes the POSIX ACL as it now is into the blob
            done.append(self.nt.command())


@dataclass
class RevertPlan:
    exposure: ExposureEvent
    paths: list[PathRevert] = field(default_factory=list)
    refused: str | None = None
    left_alone: list[str] = field(default_factory=list)
    """paths created since the exposure opened: there is no earlier state to restore"""

    def commands(self) -> list[str]:
        return [command for path in self.paths for command in path.commands()]


def plan_revert(bus: Bus, config: Config, exposure: ExposureEvent) -> RevertPlan:
    """What reverting ``exposure`` (its latest recorded event) would change, or why it must not."""
    plan = RevertPlan(exposure)
    remediation = remediation_of(config, exposure.label.name)
    if remediation == "off":
        plan.refused = f'label {exposure.label.name!r} has remediation = "off" ([labels.definitions.<name>])'
        return plan
    if exposure.status is ExposureStatus.CLOSED:
        plan.refused = "the exposure is closed already"
        return plan
    folder = exposure.folder
    prefix = folder.rstrip("/") + "/"
    history: dict[str, list[FsPermissionEvent]] = {}
    for record in bus.history([TOPIC_FS]):
        try:
            message = decode(record.value)
        except DecodeError:
            continue
        for event in unbatched(message):
            if isinstance(event, FsPermissionEvent) and (event.path == folder or event.path.startswith(prefix)):
                history.setdefault(event.path, []).append(event)
    nt_setup = nt_setup_of(config, folder)
    for path, events in sorted(history.items()):
        since = [e for e in events if e.observed_at >= exposure.opened_at]
        if not since:
            continue
        if any(e.observed_at > exposure.observed_at for e in since):
            plan.refused = f"{path} changed after the exposure's latest record ({exposure.event_id}): not reverting"
            return plan
        before = next((e for e in reversed(events) if e.observed_at < exposure.opened_at), None)
        refused = _nt_refusal(path, (*since, *([before] if before else [])), nt_setup)
        if refused is not None:
            plan.refused = refused
            return plan
        if before is None or recorded_state(before) is None:
            plan.left_alone.append(path)
            continue
        now = kernel_state(path, nt_setup.reader if nt_setup is not None else None)
        if now is None or now != recorded_state(since[-1]):
            plan.refused = f"{path} differs from its latest record (a change not recorded yet): not reverting"
            return plan
        plan.paths.append(PathRevert(path, before, now, _nt_restore(path, before, now, nt_setup)))
    plan.paths.sort(key=lambda p: p.path.count("/"), reverse=True)  # the folder last: it closes the way in
    if not plan.commands() and exposure.preexisting:
        plan.refused = "the exposure was there before permwatch's first scan: no earlier state is recorded to restore"
    elif not plan.commands():
        plan.refused = "nothing recorded to restore (no change of the folder since the exposure opened)"
    return plan


def _nt_refusal(path: str, events: Iterable[FsPermissionEvent], setup: NtSetup | None) -> str | None:
    """Why ``path``'s NT ACL cannot be put back as recorded, or None (also None for POSIX alone)."""
    for event in events:
        nt = event.nt_acl if event.acl_kind == "nt" else None
        if nt is None:
            continue
        if nt.remote:
            return f"{path} was read over SMB from another server: reverting there is not supported; not reverting"
        if setup is None:
            return f"{path} has an NT ACL, but its [[fs]] root does not read them (acl_reader); not reverting"
        why = restorable(nt)
        if why is not None:
            return f"{path}: {why}; not reverting"
    return None


def _nt_restore(path: str, before: FsPermissionEvent, now: PathState, setup: NtSetup | None) -> NtRestore | None:
    if setup is None or before.acl_kind != "nt" or before.nt_acl is None or now.nt == before.nt_acl:
        return None
    return NtRestore(path, before.nt_acl, setup.xattr_name, setup.smb_conf)


def apply_plan(paths: list[PathRevert]) -> tuple[list[str], str | None]:
    """Carry out a plan's ``paths`` in order: the commands made, and None, or one line saying what failed and what
    was restored before it (the rest is left as it was: a half-known state is not guessed at)."""
    applied: list[str] = []
    posix_done = nt_done = 0
    nt_total = sum(1 for step in paths if step.nt is not None)
    for step in paths:
        before = len(applied)
        try:
            step.apply(applied)
        except NtRestoreFailed as exc:
            why = str(exc)
            posix_done += 1
            break
        except OSError as exc:
            changed = " (partly changed)" if len(applied) > before else ""
            why = f"restoring the POSIX permissions of {step.path} failed{changed}: {exc.strerror or exc}"
            break
        posix_done += 1
        nt_done += step.nt is not None
    else:
        return applied, None
    restored = f"POSIX permissions restored on {posix_done} of {len(paths)} path(s)"
    if nt_total:
        restored += f", NT ACLs on {nt_done} of {nt_total}"
    return applied, f"{why}; {restored}"


def remediation_of(config: Config, label: str) -> str:
    definition = config.labels.definitions.get(label)
    return definition.remediation if definition is not None else "off"


def revert_exposure(
    bus: Bus,
    config: Config,
    exposure: ExposureEvent,
    *,
    by: str,
    dry_run: bool,
    out: TextIO | None,
    err: TextIO | None = None,
    via: Via = "cli",
    requested: bool = False,
) -> int:
    """Revert (or with ``dry_run`` only print) ``exposure``; 0 when done (or planned), 1 when refused.
    ``requested``: the ``revert_requested`` decision is on the bus already (the Slack button)."""
    plan = plan_revert(bus, config, exposure)
    if dry_run:
        if plan.refused is not None:
            print(f"permwatch: revert of {exposure.exposure_id} would be refused: {plan.refused}", file=err or out)
            return 1
        since = exposure.opened_at.isoformat()
        print(f"# revert {exposure.exposure_id} ({exposure.folder}): as it was before {since}", file=out)
        for command in plan.commands():
            print(command, file=out)
        for created in plan.left_alone:
            print(f"# left as is (created after the exposure opened): {shlex.quote(created)}", file=out)
        return 0
    if not requested:
        _decide(bus, exposure, DecisionAction.REVERT_REQUESTED, by=by, via=via)
    if plan.refused is not None:
        _decide(bus, exposure, DecisionAction.REVERT_REFUSED, by=by, via=via, reason=plan.refused)
        if out is None:
            log.warning("revert of %s asked by %s refused: %s", exposure.exposure_id, by, plan.refused)
        else:
            print(f"permwatch: revert of {exposure.exposure_id} refused: {plan.refused}", file=err or out)
        return 1
    commands = plan.commands()
    applied, failed = apply_plan(plan.paths)
    if failed is not None:
        _decide(bus, exposure, DecisionAction.REVERT_FAILED, by=by, via=via, reason=failed, changes=tuple(applied))
        if out is None:
            log.warning("revert of %s asked by %s failed: %s", exposure.exposure_id, by, failed)
        else:
            print(f"permwatch: revert of {exposure.exposure_id} failed: {failed}", file=err or out)
        return 1
    _decide(bus, exposure, DecisionAction.REVERTED, by=by, via=via, changes=tuple(commands))
    log.info("reverted %s (%s): %d change(s), asked by %s", exposure.exposure_id, exposure.folder, len(commands), by)
    if out is not None:
        print(f"reverted {exposure.exposure_id} ({exposure.folder}): {len(commands)} change(s)", file=out)
        for command in commands:
            print(command, file=out)
    return 0


def _decide(
    bus: Bus,
    exposure: ExposureEvent,
    action: DecisionAction,
    *,
    by: str,
    via: Via,
    reason: str | None = None,
    changes: tuple[str, ...] = (),
) -> None:
    decision = Decision(
        action=action,
        exposure_id=exposure.exposure_id,
        folder=exposure.folder,
        by=by,
        via=via,
        reason=reason[:1000] if reason else None,
        changes=changes,
        source="revert",
    )
    bus.publish(TOPIC_DECISIONS, decision.key, encode(decision))
    bus.flush()


MAX_REQUEST_AGE = timedelta(minutes=10)
"""A request (or a new exposure) older than this when the watcher reads it is not carried out: a watcher that starts
after a long stop, or reads the history afresh, must not revert what people have since decided about."""


class RevertWatcher:
    """The collector role's executor for what others ask: Slack's Revert button and ``remediation = "automatic"``.

    Reads ``exposures`` and ``decisions`` in a consumer group of its own; acts only on folders under ``roots`` (the
    ones this machine holds) and on what is recent (:data:`MAX_REQUEST_AGE`).
    """

    def __init__(self, bus: Bus, config: Config, *, group: str, clock: Callable[[], datetime] = utcnow) -> None:
        self.bus = bus
        self.config = config
        self.group = group
        self.roots = tuple(root.rstrip("/") or "/" for fs in config.stage_settings("fs") for root in map(str, fs.roots))
        self._clock = clock
        self._latest: dict[str, ExposureEvent] = {}
        self.reverted = 0
        self.refused = 0

    def run(self, stop: threading.Event) -> None:
        consumer = self.bus.consumer([TOPIC_EXPOSURES, TOPIC_DECISIONS], self.group)
        log.info("revert executor started (remediation on command or automatic; group %s)", self.group)
        try:
            while not stop.is_set():
                records = consumer.poll(0.2)
                for record in records:
                    try:
                        event = decode(record.value)
                    except DecodeError:
                        continue
                    if isinstance(event, ExposureEvent):
                        self._on_exposure(event)
                    elif isinstance(event, Decision):
                        self._on_decision(event)
                if records:
                    consumer.commit()
        finally:
            consumer.close()

    def _mine(self, folder: str) -> bool:
        return any(folder == root or folder.startswith(root.rstrip("/") + "/") for root in self.roots)

    def _recent(self, at: datetime) -> bool:
        return self._clock() - at <= MAX_REQUEST_AGE

    def _on_exposure(self, event: ExposureEvent) -> None:
        known = self._latest.get(event.exposure_id)
        if known is None or event.sequence > known.sequence:
            self._latest[event.exposure_id] = event
        if event.status is ExposureStatus.CLOSED:
            self._latest.pop(event.exposure_id, None)
            return
        if event.status is not ExposureStatus.OPENED or event.preexisting or not self._mine(event.folder):
            return
        if remediation_of(self.config, event.label.name) == "automatic" and self._recent(event.detected_at):
            self._revert(event, by="automatic", via="automatic", requested=False)

    def _on_decision(self, decision: Decision) -> None:
        if decision.action is not DecisionAction.REVERT_REQUESTED or decision.via != "slack":
            return  # the CLI reverts by itself; what the executor records it has done
        if not self._mine(decision.folder) or not self._recent(decision.observed_at):
            return
        exposure = self._latest.get(decision.exposure_id)
        if exposure is None:
            log.warning(
                "revert of %s asked by %s: not open on the record; not reverting", decision.exposure_id, decision.by
            )
            return
        self._revert(exposure, by=decision.by, via="slack", requested=True)

    def _revert(self, exposure: ExposureEvent, *, by: str, via: Via, requested: bool) -> None:
        done = revert_exposure(
            self.bus, self.config, exposure, by=by, dry_run=False, out=None, via=via, requested=requested
        )
        if done == 0:
            self.reverted += 1
        else:
            self.refused += 1
