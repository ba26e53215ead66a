"""Who changed a path: actor sources for the filesystem collector, chosen by ``[[fs]] actors``.

inotify says a path's attributes changed but not by whom. An actor source
watches the same roots by other means and, when the collector publishes the
change, says who made it (:meth:`ActorSource.actor_of`). ``fanotify``
(:class:`FanotifyActors`) marks the roots' filesystems for ``FAN_ATTRIB`` (chmod,
chown, setfacl, setxattr) and reads the events on a thread of its own, as soon
as they arrive, because a process can be asked who it is only while it lives;
a lookup drains whatever is queued first, so an event the kernel queued with
inotify's is never missed for want of a wake-up. Each actor carries its
confidence (see :class:`permwatch.events.Actor`). A source that cannot start
(no ``CAP_SYS_ADMIN``) is logged once and the collector goes on without actors.
Adding a source is one class and one line in :data:`ACTOR_SOURCES`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from collectors.acl import NameCache
from collectors.fanotify import FAN_ATTRIB, FAN_ONDIR, FanEvent, Fanotify, FanotifyUnavailable, Listener, Process
from collectors.fs.settings import FsCollectorConfig
from permwatch.events import Actor

log = logging.getLogger(__name__)

MAX_REMEMBERED = 100_000
"""Paths with an actor not yet asked for; past this the oldest are forgotten (their change was never published)."""


class ActorSource(Protocol):
    """Says who made the latest change of a path, once; started with the roots, closed with the collector."""

    def start(self, roots: Sequence[str]) -> None: ...

    def actor_of(self, path: str) -> Actor | None: ...

    def close(self) -> None: ...


def actor_from(process: Process, names: NameCache) -> Actor:
    """The contract's actor for a process fanotify named."""
    name = None if process.uid is None else names.user(process.uid)
    return Actor(
        name=name, uid=process.uid, process=process.name or None, pid=process.pid, confidence=process.confidence
    )


class FanotifyActors:
    """Attributes permission changes below the roots with fanotify; see the module docstring."""

    def __init__(self, names: NameCache, *, capacity: int = MAX_REMEMBERED) -> None:
        self._names = names
        self._capacity = capacity
        self._latest: OrderedDict[str, Actor] = OrderedDict()
        self._prefixes: tuple[str, ...] = ()
        self._roots: frozenset[str] = frozenset()
        self._listener = Listener("fs-actors")
        self._lock = self._listener.lock
        self.events_read = 0

    def start(self, roots: Sequence[str]) -> None:
        try:
            fan = Fanotify()
            for root in roots:
                fan.mark(root, FAN_ATTRIB | FAN_ONDIR, filesystem=True)
        except FanotifyUnavailable as exc:
            log.warning("actors: fanotify unavailable (%s); permission changes will not name who made them", exc)
            if "fan" in locals():
                fan.close()
            return
        self._roots = frozenset(roots)
        self._prefixes = tuple(root.rstrip("/") + "/" for root in roots)
        self._listener.start(fan, self._read)

    def _read(self, fan: Fanotify) -> float:
        for event in fan.read():
            self._remember(event)
        return 0.0

    def drain(self) -> None:
        """Read every queued event now and remember its path's actor."""
        with self._lock:
            if self._listener.fan is not None:
                self._read(self._listener.fan)

    def _remember(self, event: FanEvent) -> None:
        path = event.path
        if path is None or not event.is_attrib:
            return
        if path not in self._roots and not path.startswith(self._prefixes):
            return  # a filesystem mark sees the whole filesystem; only the roots matter
        self.events_read += 1
        actor = actor_from(event.process, self._names)
        self._latest.pop(path, None)  # the latest change's actor; an unresolved one is not covered up
        self._latest[path] = actor
        if len(self._latest) > self._capacity:
            self._latest.popitem(last=False)

    def actor_of(self, path: str) -> Actor | None:
        self.drain()
        with self._lock:
            return self._latest.pop(path, None)

    def close(self) -> None:
        self._listener.close()


class NoActors:
    """No actor source: changes name nobody (the default)."""

    def start(self, roots: Sequence[str]) -> None:
        return None

    def actor_of(self, path: str) -> Actor | None:
        return None

    def close(self) -> None:
        return None


class FirstOf:
    """Several sources, asked in order: the first that names an actor wins (each forgets the path either way)."""

    def __init__(self, sources: Sequence[ActorSource]) -> None:
        self.sources = tuple(sources)

    def start(self, roots: Sequence[str]) -> None:
        for source in self.sources:
            source.start(roots)

    def actor_of(self, path: str) -> Actor | None:
        found = [source.actor_of(path) for source in self.sources]
        return next((actor for actor in found if actor is not None), None)

    def close(self) -> None:
        for source in self.sources:
            source.close()


def _linux_audit(config: FsCollectorConfig, names: NameCache) -> ActorSource:
    from collectors.fs.linux_audit import LinuxAuditActors

    return LinuxAuditActors(config.audit_log, key=config.audit_key)


def _smb_audit(config: FsCollectorConfig, names: NameCache) -> ActorSource:
    from collectors.fs.smb_audit import SmbAuditActors

    if config.smb_audit_log is None:
        raise UnknownActorSourceError("[[fs]] actors names smb_audit, but [[fs]] smb_audit_log is not set")
    return SmbAuditActors(config.smb_audit_log)


ACTOR_SOURCES: dict[str, Callable[[FsCollectorConfig, NameCache], ActorSource]] = {
    "none": lambda config, names: NoActors(),
    "fanotify": lambda config, names: FanotifyActors(names),
    "smb_audit": _smb_audit,
    "audit": _linux_audit,
}
"""``[[fs]] actors`` names one, or several joined by commas (``"smb_audit,fanotify"``: asked in that order)."""


class UnknownActorSourceError(ValueError):
    """``[[fs]] actors`` names no source in :data:`ACTOR_SOURCES`."""


def actor_source_named(config: FsCollectorConfig, names: NameCache) -> ActorSource:
    """The source ``[[fs]] actors`` selects (several, comma-separated, are asked in order)."""
    wanted = [part.strip() for part in config.actors.split(",") if part.strip()]
    sources = []
    for name in wanted:
        make = ACTOR_SOURCES.get(name)
        if make is None:
            known = ", ".join(sorted(ACTOR_SOURCES))
            raise UnknownActorSourceError(
                f"[[fs]] actors = {config.actors!r} names no actor source {name!r} (known: {known})"
            )
        sources.append(make(config, names))
    return sources[0] if len(sources) == 1 else FirstOf(sources)
