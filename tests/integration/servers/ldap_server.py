"""What the directory-server fixtures share (389-ds in `dirsrv`, Samba's AD DCs in `samba_ad` and `samba_ad_files`).

Each runs its server through a `ServerProcess` (``_server``) and is a directory one binds as ``bind_dn`` with
``password`` at ``uri`` to read ``base_dn``: `LdapServer` gives them the bound ldap3 connection, adding entries,
the readiness probe (a bind and a base search) and stopping or killing the process. How a server is created,
configured and started stays in its own module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ldap3 import BASE, NONE, Connection, Server

from tests.integration.servers.process import ServerProcess

Entry = tuple[str, Sequence[str], Mapping[str, Any]]
"""One entry for `LdapServer.add_entries`: ``(dn, object_classes, attributes)``."""


class LdapServer:
    """A directory server fixture: ``uri``, ``bind_dn``, ``password``, ``base_dn`` and its ``_server`` process."""

    password: str
    base_dn: str
    _server: ServerProcess

    @property
    def uri(self) -> str:
        raise NotImplementedError

    @property
    def bind_dn(self) -> str:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._server.running

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM the process group; SIGKILL it if still alive after ``timeout`` s."""
        self._server.stop(timeout)

    def kill(self) -> None:
        """SIGKILL the process group immediately (an unclean crash)."""
        self._server.kill()

    def connect(self, **connection_kwargs: Any) -> Connection:
        """A new ldap3 connection bound as ``bind_dn``; extra arguments go to `Connection`."""
        connection_kwargs.setdefault("auto_bind", True)
        return Connection(Server(self.uri), self.bind_dn, self.password, **connection_kwargs)

    def add_entries(self, entries: Iterable[Entry]) -> None:
        """Add ``(dn, object_classes, attributes)`` entries in order, as ``bind_dn``."""
        conn = self.connect()
        try:
            for dn, object_classes, attributes in entries:
                if not conn.add(dn, list(object_classes), dict(attributes)):
                    raise self._server.error(f"adding {dn!r} failed: {conn.result}")
        finally:
            conn.unbind()

    def _wait_ready(self) -> None:
        raise NotImplementedError

    def _ready_or_killed(self) -> None:
        """Block until the server just spawned answers (`_wait_ready`); SIGKILL it if it does not."""
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _binds_and_finds_base(self) -> bool:
        """The readiness probe: a simple bind and a base search of ``base_dn`` succeed (else the fixture's error,
        with the result, which `ServerProcess.wait_ready` keeps as the last one)."""
        server = Server(self.uri, get_info=NONE, connect_timeout=2)
        conn = Connection(server, self.bind_dn, self.password, receive_timeout=5)
        try:
            if conn.bind() and conn.search(self.base_dn, "(objectClass=*)", search_scope=BASE):
                return True
            raise self._server.error(f"bind/search result: {conn.result}")
        finally:
            conn.unbind()
