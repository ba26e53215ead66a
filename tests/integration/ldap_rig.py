"""What the LDAP collector's integration tests share: an emitter that keeps what the collector publishes, the
principals among it, and a collector caught up once for a test and closed after it."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from collectors.ldap import LdapCollector
from collectors.ldap_settings import LdapCollectorConfig
from permwatch.events import DirectoryGroup, DirectoryUser, Event

Principal = DirectoryUser | DirectoryGroup


class Recorder:
    """An emitter that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def flush(self) -> None:
        pass

    def since(self, mark: int) -> list[Event]:
        with self._lock:
            return self.events[mark:]


def principals(events: Sequence[Event]) -> list[Principal]:
    return [e for e in events if isinstance(e, DirectoryUser | DirectoryGroup)]


def caught_up(config: LdapCollectorConfig, recorder: Recorder, state_path: Path) -> Iterator[LdapCollector]:
    """A collector that has published its first snapshot into ``recorder``, closed when the test is done (a
    fixture yields from it)."""
    running = LdapCollector(config, recorder, state_path=state_path)
    running.catch_up()
    yield running
    running.close()
