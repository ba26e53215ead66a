"""The live directory collector: users and groups from an LDAP server, then every change as it happens.

On first start it reads a full snapshot of the in-scope users and groups
(nested groups through ``member`` DNs, ``memberUid`` for posixGroup, uid and
gid numbers, disabled accounts) and publishes it, users first. From then on
a change mode (see :data:`CHANGE_MODES` and ``collectors/ldap_modes.py``)
reports each write, and the collector publishes the principals it changed,
with the change's author (``actor``) and time. The mode's cursor and the
collector's copy of the directory are saved with every published batch, so
a restart resumes the stream without re-publishing the snapshot; it then
reads the directory once more and publishes anything the stream did not
account for, so nothing is missed (writes made while it reads are followed
one by one, like any other). A gap the stream cannot bridge (the accesslog
purged past the cursor) is handled the same way: resnapshot, publish only
the differences. Changes no stream reports (an offline ``slapmodify``, a
restored backup, a write made while the server was cut off) are found the
same way: every reconnect, and every ``reconcile_seconds``, the collector
reads the whole directory again and publishes only how it differs from what
was published. A batch that was on its way to the bus when the process
died is published again as the last state of each principal it changed,
never as the older states before them (see ``_commit``), at the start, even
while the server cannot be reached (the saved copy holds all it needs). A lost connection
is retried with exponential backoff, capped low (``backoff_max_seconds``)
and jittered, so a directory that comes back is followed again within
seconds. A search the server cut short at a limit
(:class:`~collectors.ldap_session.DirectoryLimitExceeded`) publishes nothing
and is logged as an error naming the account and the limit. The bind
password is read from a file or the environment and never logged.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from collectors.ldap_accesslog import AccesslogMode
from collectors.ldap_dirsync import DirSyncMode
from collectors.ldap_entries import EntrySchema, RawEntry
from collectors.ldap_mirror import DirectoryMirror, days_of
from collectors.ldap_modes import ChangeGap, ChangeMode, ModeFactory
from collectors.ldap_psearch import PersistentSearchMode
from collectors.ldap_session import RETRYABLE, DirectoryLimitExceeded, LdapSession, read_directory
from collectors.ldap_settings import LdapCollectorConfig
from collectors.ldap_snapshot import SnapshotMode
from collectors.ldap_state import LdapStateFile, fingerprint
from collectors.metrics import CollectorMetrics
from collectors.spool import RecordDropped
from permwatch.config import ConfigError
from permwatch.events import DirectoryGroup, DirectoryUser, Event, utcnow
from permwatch.metrics import Metrics

log = logging.getLogger("permwatch.collectors.ldap")

CHANGE_MODES: dict[str, ModeFactory] = {
    "accesslog": AccesslogMode,
    "snapshot": SnapshotMode,
    "persistent_search": PersistentSearchMode,
    "dirsync": DirSyncMode,
}
"""How changes are learnt, by the config's ``mode`` name."""


LOGGED_RETRIES = 6
"""Failed reconnects in a row that are each logged (the delays grow to their cap meanwhile)..."""
RETRY_LOG_SECONDS = 60.0
"""...after which one line this often says the server is still unreachable, with the attempt count."""

RECOVERABLE: tuple[type[Exception], ...] = (*RETRYABLE, ChangeGap, DirectoryLimitExceeded)
"""What ``run`` survives, retried with backoff: the server or network failing, a stream gap found mid-resync,
or a search cut short at a limit (the server's limits may be lifted while it waits)."""


@runtime_checkable
class HoldsConnections(Protocol):
    """A mode with connections of its own (persistent search), closed with the collector."""

    def close(self) -> None: ...


class Emitter(Protocol):
    def emit(self, event: Event) -> None: ...

    def flush(self) -> None: ...


def read_password(config: LdapCollectorConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The bind password from ``password_file`` or ``password_env``; raise :class:`ConfigError` (without it)."""
    where = f"ldap collector {config.collector_id!r}"
    if config.password_file is not None:
        try:
            return config.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"{where}: key 'password_file': cannot read {config.password_file}: {exc.strerror}"
            ) from None
    if config.password_env is not None:
        value = (os.environ if environ is None else environ).get(config.password_env)
        if not value:
            raise ConfigError(f"{where}: key 'password_env': environment variable {config.password_env} is not set")
        return value
    return None


class Backoff:
    """Exponential delays with jitter: about first, 2×first, 4×first, … up to ``cap`` seconds.

    Each delay is drawn between half and all of its step ("equal jitter"), so
    collectors that lost the same server do not all come back at the same
    instant, and the cap keeps the wait after a server returns short.
    """

    def __init__(self, first: float = 0.5, cap: float = 5.0, jitter: Callable[[], float] = random.random) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0
        self._jitter = jitter

    def failed(self) -> float:
        step = min(self.cap, self.first * 2.0 ** min(self.failures, 32))  # a bounded exponent: no float overflow
        self.failures += 1
        return step * (0.5 + 0.5 * self._jitter())

    def reset(self) -> None:
        self.failures = 0


class LdapCollector:
    """Follows one directory server (``run``) or, for tests and tools, one step at a time (``catch_up``)."""

    def __init__(
        self,
        config: LdapCollectorConfig,
        emitter: Emitter,
        *,
        state_path: Path,
        clock: Callable[[], datetime] = utcnow,
        environ: Mapping[str, str] | None = None,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.emitter = emitter
        self.metrics = metrics
        self._password = read_password(config, environ)
        try:
            self.session = LdapSession(config, self._password)
        except ValueError as exc:
            raise ConfigError(f"ldap collector {config.collector_id!r}: key 'uri': {exc}") from None
        if config.mode not in CHANGE_MODES:
            known = ", ".join(sorted(CHANGE_MODES))
            raise ConfigError(f"ldap collector {config.collector_id!r}: key 'mode': unknown {config.mode!r} ({known})")
        self.schema = EntrySchema.from_config(config)
        self.mode: ChangeMode = CHANGE_MODES[config.mode](config, self.schema)
        self._clock = clock
        self._monotonic = monotonic
        self._reconciled_at = monotonic()
        self._retry_logged_at = -RETRY_LOG_SECONDS
        self.state = LdapStateFile(state_path, fingerprint(config))
        self._load_saved()
        self.published = 0

    def _load_saved(self) -> None:
        """Start from what the last commit accounts for: the saved copy and cursor, or nothing."""
        self.mirror = DirectoryMirror(
            self.schema,
            source=self.config.collector_id,
            referential_integrity=self.config.referential_integrity,
            today=days_of(self._clock),
        )
        saved = self.state.load()
        self._resuming = saved is not None
        self._pending: list[Event] = []
        if saved is not None:
            self.mirror.load(saved.entries)
            self.mode.cursor = saved.cursor
            self._pending = list(saved.unconfirmed)
            log.info(
                "ldap %s: resuming with %d saved entries%s",
                self.config.collector_id,
                len(self.mirror),
                f", publishing the last {len(self._pending)} again" if self._pending else "",
            )
        self._unsaved = bool(self._pending)
        self._verified = False

    # ------------------------------------------------------------- running

    def run(self, stop: threading.Event) -> None:
        backoff = Backoff(cap=self.config.backoff_max_seconds)
        try:
            while not stop.is_set():
                try:
                    self.catch_up()
                except RecordDropped:
                    delay = backoff.failed()
                    if backoff.failures == 1:
                        log.warning(
                            "ldap %s: the collector's spool is full; publishing the last state of what changed "
                            "again once it takes records (next try in %.1f s)",
                            self.config.collector_id,
                            delay,
                        )
                    stop.wait(delay)
                    continue
                except RECOVERABLE as exc:
                    self.session.close()
                    if self.metrics is not None:
                        self.metrics.part(CollectorMetrics).directory_sync_failed(self.config.collector_id)
                    delay = backoff.failed()
                    self._log_retry(exc, delay, backoff.failures)
                    stop.wait(delay)
                    continue
                if backoff.failures:
                    log.info("ldap %s: %s reachable again", self.config.collector_id, self.session.where)
                    backoff.reset()
                if self.metrics is not None:
                    users = sum(1 for state in self.mirror.states.values() if isinstance(state, DirectoryUser))
                    groups = len(self.mirror.states) - users
                    self.metrics.part(CollectorMetrics).directory_synced(
                        self.config.collector_id, users=users, groups=groups, at=time.time()
                    )
                stop.wait(self.config.poll_seconds)
        finally:
            self.close()

    def _log_retry(self, exc: Exception, delay: float, failures: int) -> None:
        """Each of the first failures in a row, then one line a minute: a long outage at a 5 s cap stays readable."""
        now = self._monotonic()
        if failures > LOGGED_RETRIES and now - self._retry_logged_at < RETRY_LOG_SECONDS:
            return
        self._retry_logged_at = now
        attempts = f", attempt {failures}" if failures > LOGGED_RETRIES else ""
        if isinstance(exc, DirectoryLimitExceeded):
            log.error("ldap %s: %s; retrying in %.1f s%s", self.config.collector_id, exc, delay, attempts)
            return
        log.warning(
            "ldap %s: %s unavailable (%s); retrying in %.1f s%s",
            self.config.collector_id,
            self.session.where,
            self._describe(exc),
            delay,
            attempts,
        )

    def catch_up(self) -> int:
        """Connect when needed, publish what changed since the last call; return how many events that was.

        The first call after a start or a reconnect, and the first after each ``reconcile_seconds``, also
        reads the whole directory and publishes how it differs from what was published: what no change
        stream reported (an offline edit, a restored backup, a write made during an outage) is found there.

        When the bus drops an event (the spool is full: :class:`RecordDropped`), the exception is raised on
        and the next call publishes the last state of every principal the batch changed again, so nothing
        is lost (see :meth:`_commit`).
        """
        before = self.published
        try:
            if not self.session.is_open:
                self._verified = False  # whatever happened while it was closed, read the whole directory again
                # (inside the try: a batch a crash left owed to the bus is published even while the server is down)
                self.session.open()
            if self._verified and self._monotonic() - self._reconciled_at >= self.config.reconcile_seconds:
                self._verified = False
            if not self._verified:
                self._resync(resume=self._resuming)
                self._verified = True
                self._resuming = True
                self._reconciled_at = self._monotonic()
            else:
                try:
                    self._follow()
                except ChangeGap as gap:
                    log.warning("ldap %s: %s; resnapshotting", self.config.collector_id, gap)
                    self._resync(resume=False)
            expired = self.mirror.refresh_day()
            if expired:
                self._unsaved = True
                self._emit(expired)
        finally:
            self._commit()
        return self.published - before

    def close(self) -> None:
        self.session.close()
        if isinstance(self.mode, HoldsConnections):
            self.mode.close()

    # ------------------------------------------------------------- steps

    def _follow(self) -> None:
        cursor = copy.deepcopy(self.mode.cursor)
        try:
            for change in self.mode.poll(self.session, self.mirror):
                if self.metrics is not None:
                    kind = "entry_deleted" if change.entry is None else "entry_changed"
                    self.metrics.part(CollectorMetrics).collector_events_read.labels(
                        collector=self.config.collector_id, type=kind
                    ).inc()
                self._unsaved = True
                self._emit(self.mirror.apply(change, self._read))
        finally:
            # the cursor may also have moved past writes outside the bases
            self._unsaved = self._unsaved or self.mode.cursor != cursor

    def _resync(self, *, resume: bool) -> None:
        """Read the whole directory and publish how it differs from what was published (all of it, at first)."""
        started = time.monotonic()
        if resume:
            try:
                self._follow()  # first the logged changes, each with its author
            except ChangeGap as gap:
                log.warning("ldap %s: %s; resnapshotting", self.config.collector_id, gap)
                resume = False
        if not resume:
            self.mode.mark(self.session)
        snapshot = read_directory(self.session, self.schema)
        staging = self.mirror.copy_empty()
        if resume:
            # Writes made while the snapshot was read are in the stream too: follow them, each with its
            # author, and let the snapshot speak only for the entries they left alone. (Folded into the
            # snapshot, as on a first start, they would come out as one difference per principal, with
            # whoever touched the entry last as the author, and a member added and removed meanwhile not
            # at all.)
            followed = dict(self.mirror.entries)
            self._follow()
            for key in followed.keys() | self.mirror.entries.keys():
                entry = self.mirror.entries.get(key)
                if entry is not followed.get(key):
                    snapshot.pop(key, None)
                    if entry is not None:
                        snapshot[key] = entry
            staging.load(snapshot.values())
        else:
            staging.load(snapshot.values())
            for change in self.mode.poll(self.session, staging):  # writes made while the snapshot was read
                staging.apply(change, self._read)
        first = not self.mirror.states
        held = self.mirror.entries
        events = self.mirror.replace_all(staging)
        # A reconcile that finds nothing new costs one read: no event, and the saved copy is not rewritten.
        self._unsaved = self._unsaved or not resume or bool(events) or held != self.mirror.entries
        self._emit(events)
        groups = sum(1 for s in self.mirror.states.values() if isinstance(s, DirectoryGroup))
        log.log(
            logging.INFO if events or first or not resume else logging.DEBUG,
            "ldap %s: %s of %d users and %d groups from %s in %.2f s: %d event(s)",
            self.config.collector_id,
            "snapshot" if first else "reconcile" if resume else "resnapshot",
            len(self.mirror.states) - groups,
            groups,
            self.session.where,
            time.monotonic() - started,
            len(events),
        )

    def _read(self, dn: str) -> RawEntry | None:
        """The entry at ``dn`` on the server now: how the mirror learns what a rename left in the groups."""
        return self.session.read(dn, self.schema.wanted())

    def _emit(self, events: list[Event]) -> None:
        self._pending.extend(events)  # handed to the bus by _commit

    def _commit(self) -> None:
        """Publish the batch and save the cursor and copy it accounts for, so that no crash loses or rewinds.

        First the copy and cursor after the batch are saved, with the last event of every principal the
        batch changed marked unconfirmed; then the batch goes to the bus and is flushed; then the copy is
        saved again, confirmed. A process that dies in between cannot know how much of the batch got out,
        so the next start publishes the unconfirmed events again: to a consumer that had them, the same
        state once more. Following the stream again from the cursor before the batch instead would take
        such a consumer back through the batch's older states (a group nested again after it was taken
        out: an exposure opened a second time). So the older states of a batch a crash interrupts are
        published at most once, and the last state of each principal at least once.
        """
        if not self._unsaved:
            return
        entries = list(self.mirror.entries.values())
        if self._pending:
            last = {event.key: i for i, event in enumerate(self._pending)}
            unconfirmed = [self._pending[i] for i in sorted(last.values())]
            self.state.save(self.mode.cursor, entries, unconfirmed)
            try:
                for event in self._pending:
                    self.emitter.emit(event)
                self.emitter.flush()
            except BaseException:
                self._pending = list(unconfirmed)  # what the saved copy still owes the bus
                raise
            self.published += len(self._pending)
            self._pending = []
        self.state.save(self.mode.cursor, entries)
        self._unsaved = False

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        if self._password:
            text = text.replace(self._password, "***")
        return text
