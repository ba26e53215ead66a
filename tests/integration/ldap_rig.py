"""What the LDAP collector's integration tests share: an emitter that keeps what the collector publishes, the
principals among it, a collector caught up once for a test and closed after it, and the settings that read an AD
domain controller in ``dirsync`` mode."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from collectors.ldap import LdapCollector
from collectors.ldap_settings import LdapCollectorConfig
from permwatch.events import DirectoryGroup, DirectoryUser, Event
from tests.integration.servers.ldap_server import LdapServer

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


def ad_dirsync(
    dc: LdapServer, password_file: Path, *, collector_id: str, people: str, groups: str, **more: Any
) -> LdapCollectorConfig:
    """The collector reading users and groups of ``dc`` (a Samba AD DC) under ``people`` and ``groups`` with
    DirSync, bound as its Administrator, names being ``sAMAccountName``; ``more`` settings besides."""
    settings: dict[str, Any] = {
        "collector_id": collector_id,
        "uri": dc.uri,
        "bind_dn": dc.bind_dn,
        "password_file": password_file,
        "user_base": people,
        "group_base": groups,
        "user_object_classes": ["user"],
        "group_object_classes": ["group"],
        "mode": "dirsync",
        "attributes": {
            "user_name": "sAMAccountName",
            "group_name": "sAMAccountName",
            "unique_id": "objectGUID",
            "change_sequence": "",
            "modify_timestamp": "whenChanged",
            "modifiers_name": "",
        },
    }
    return LdapCollectorConfig.model_validate(settings | more)
