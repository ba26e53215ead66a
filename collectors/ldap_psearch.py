"""The "persistent_search" change mode: follow a 389 Directory Server through persistent search.

One persistent search (ldap3, ``changes_only``, entry-change notifications)
runs on its own connection over the closest common ancestor of the user and
group bases, filter ``(objectClass=*)`` so an entry that stops being a user or
group is seen too. Every notification carries the whole entry after the
change, so each becomes an :class:`EntryChange` as it stands: author
``modifiersName``, time ``modifyTimestamp``; a delete is a deletion (author
unknown: the entry shows its last modifier, not who deleted it); a
``modify dn`` is a rename from ``previousDN`` or, when the server leaves that
out, from the held entry with the same unique id.

Persistent search has no resume point, so the cursor stays empty. ``mark``
starts the search and waits until the server has answered a later request on
the same connection (the search is registered by then); the snapshot the
collector reads next closes the gap, and notifications that overlap it are
harmless because each states the whole entry. After a restart, or when the
search ends (dropped connection, server restart, a result from the server),
``poll`` raises :class:`ChangeGap` once the notifications already received
are handed out: the collector resnapshots and publishes only the differences,
authored by each entry's ``modifiersName``. The first poll after ``mark``
(the one over the fresh snapshot) makes one more round trip on the search's
connection first, so notifications of writes the snapshot already read are in
by then, not applied later over the newer state. (Notifications carry no
sequence number, and ``modifyTimestamp`` comes from whichever replica's clock
made the change, so it cannot order them.)

On 389 set ``[ldap.attributes] unique_id = "nsUniqueId"`` (every version has
it; ``entryUUID`` needs the entryuuid plugin of 389 ≥ 2.0, and entries older
than the plugin lack it). Whether the referint plugin is enabled (it is off
by default) does not matter: after a rename or deletion the collector
re-reads the groups that named the entry.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from ldap3 import ANONYMOUS, ASYNC_STREAM, BASE, NONE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPCommunicationError

from collectors.ldap_entries import (
    EntrySchema,
    RawEntry,
    attribute_text,
    is_within,
    parent_dn,
    parse_generalized_time,
)
from collectors.ldap_modes import ChangeGap, Cursor, EntryChange, EntryLookup
from collectors.ldap_session import LdapSession
from collectors.ldap_settings import LdapCollectorConfig

log = logging.getLogger("permwatch.collectors.ldap")

KEEPALIVE = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3}
"""A silently dead peer ends the search after ~90 s instead of never (Linux socket options; others use defaults)."""

Notification = Mapping[str, Any]


def search_bases(schema: EntrySchema) -> list[str]:
    """The closest DN both bases are within (one search), or each base when they share none."""
    base = schema.user_base
    while base and not is_within(schema.group_base, base):
        base = parent_dn(base)
    return [base] if base else sorted({schema.user_base, schema.group_base})


class _Stream:
    """One persistent search on its own connection; ``collect`` moves what arrived into ``pending``."""

    def __init__(self, connection: Any, search: Any, base: str) -> None:
        self.connection = connection
        self.search = search
        self.base = base
        self.ended: str | None = None

    def collect(self, pending: deque[Notification]) -> None:
        # Read ``closed`` first: the receiver thread queues everything it got before it marks the connection closed.
        closed = self.connection.closed
        while (item := self.search.next(block=False)) is not None:
            if item.get("type") == "searchResEntry":
                pending.append(item)
            elif item.get("type") == "searchResDone" and self.ended is None:
                self.ended = f"the server ended the persistent search on {self.base} ({item.get('description')})"
        if closed and self.ended is None:
            self.ended = f"the persistent search connection for {self.base} was closed"

    def close(self) -> None:
        if not self.connection.closed:
            with contextlib.suppress(LDAPCommunicationError, OSError):  # the server is gone already
                self.search.stop(unbind=False)  # abandon; _discard unbinds
        _discard(self.connection)


class PersistentSearchMode:
    """Follow a 389 DS through persistent search; the cursor is empty (there is no resume point)."""

    def __init__(self, config: LdapCollectorConfig, schema: EntrySchema) -> None:
        self.config = config
        self.schema = schema
        self.cursor: Cursor = {}
        self._streams: list[_Stream] = []
        self._pending: deque[Notification] = deque()
        self._fresh = False  # the next poll is the one over the snapshot read just after mark

    def mark(self, session: LdapSession) -> None:
        """(Re)start the search; return once the server has taken it up."""
        self.close()
        try:
            for base in search_bases(self.schema):
                self._streams.append(self._start(session, base))
            for stream in self._streams:
                _round_trip(stream, self.config.timeout_seconds)
                stream.collect(self._pending)
                if stream.ended:
                    raise ChangeGap(stream.ended)
        except BaseException:
            self.close()
            raise
        self._fresh = True

    def poll(self, session: LdapSession, mirror: EntryLookup) -> Iterator[EntryChange]:
        if not self._streams:
            raise ChangeGap("no persistent search is running, and it has no resume point")
        for stream in self._streams:
            if self._fresh:
                _round_trip(stream, self.config.timeout_seconds)
            stream.collect(self._pending)
        self._fresh = False
        ended = next((s.ended for s in self._streams if s.ended), None)
        while self._pending:
            change = self._change_for(self._pending[0], mirror)
            if change is not None:
                yield change
            self._pending.popleft()  # only once handled: a poll abandoned mid-way hands it out again
        if ended:
            self.close()
            raise ChangeGap(ended)

    def close(self) -> None:
        """Stop the searches and close their connections."""
        streams, self._streams = self._streams, []
        self._pending.clear()
        for stream in streams:
            stream.close()

    # ------------------------------------------------------------- internals

    def _start(self, session: LdapSession, base: str) -> _Stream:
        connection = _stream_connection(session, self.config)
        try:
            _keep_alive(connection)
            search = connection.extend.standard.persistent_search(
                search_base=base,
                search_filter="(objectClass=*)",
                search_scope=SUBTREE,
                attributes=list(self.schema.wanted()),
                changes_only=True,
                notifications=True,
                streaming=False,  # queue each notification as a dict (the default writes LDIF text)
            )
        except BaseException:
            _discard(connection)
            raise
        return _Stream(connection, search, base)

    def _change_for(self, notification: Notification, mirror: EntryLookup) -> EntryChange | None:
        entry = RawEntry(notification["dn"], _text_attributes(notification.get("raw_attributes") or {}))
        kind = notification.get("changeType")
        if kind == "delete":
            return EntryChange(entry.dn, None)
        actor = entry.first(self.schema.modifiers_name) or None
        changed_at = parse_generalized_time(entry.first(self.schema.modify_timestamp))
        if kind == "modify dn":
            previous = notification.get("previousDN")
            old_dn = (str(previous) if previous is not None else self._held_dn(entry, mirror)) or entry.dn
        elif kind in ("add", "modify"):
            old_dn = entry.dn
        else:
            log.debug("persistent search: ignoring a notification of type %r for %s", kind, entry.dn)
            return None
        return EntryChange(old_dn, entry, actor, changed_at)

    def _held_dn(self, entry: RawEntry, mirror: EntryLookup) -> str | None:
        """The DN under which the collector holds the entry with this unique id (a rename without previousDN)."""
        unique_id = entry.first(self.schema.unique_id)
        if unique_id is None:
            return None
        for key in mirror.dns():
            held = mirror.get(key)
            if held is not None and held.first(self.schema.unique_id) == unique_id:
                return held.dn
        return None


def _stream_connection(session: LdapSession, config: LdapCollectorConfig) -> Any:
    """A second connection like the session's, bound, in ldap3's streaming strategy (which persistent search needs).

    The password is the session's: LdapSession keeps it to itself and offers no
    streaming connection, so it is read from there; it is never logged.
    """
    tls = None
    if session.use_ssl or config.start_tls:
        tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(config.ca_file) if config.ca_file else None)
    server = Server(
        session.host,
        port=session.port,
        use_ssl=session.use_ssl,
        tls=tls,
        get_info=NONE,
        connect_timeout=config.timeout_seconds,
    )
    connection = Connection(
        server,
        user=config.bind_dn,
        password=session._password,
        authentication=SIMPLE if config.bind_dn else ANONYMOUS,
        client_strategy=ASYNC_STREAM,
        raise_exceptions=True,
        read_only=True,
        auto_referrals=False,
        return_empty_attributes=False,
    )
    try:
        connection.open()
        if config.start_tls and not session.use_ssl:
            connection.start_tls()
        connection.bind()
    except BaseException:
        _discard(connection)
        raise
    return connection


def _discard(connection: Any) -> None:
    """Unbind and close whatever state the connection is in (ldap3 leaves the socket open when a connect fails)."""
    if not connection.closed:
        with contextlib.suppress(LDAPCommunicationError, OSError):  # the server is gone already
            connection.unbind()
    sock = getattr(connection, "socket", None)
    if sock is not None:
        sock.close()
        connection.socket = None


def _keep_alive(connection: Any) -> None:
    sock = connection.socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in KEEPALIVE.items():
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _round_trip(stream: _Stream, timeout: float) -> None:
    """Read the root DSE on the search's connection and wait for the answer.

    The server reads a connection's requests in order, so once it answers
    this one it has read the search sent before it (and, in practice, registered
    it: 389 does that as it reads a changes-only search, which has no initial
    results); no LDAP reply says so directly, as such a search sends nothing
    until something changes. The wait also lets notifications already on their
    way arrive.
    """
    message_id = stream.connection.search("", "(objectClass=*)", BASE, attributes=["1.1"])
    stream.connection.get_response(message_id, timeout=timeout)


def _text_attributes(raw: Mapping[str, list[bytes]]) -> dict[str, tuple[str, ...]]:
    """Lower-case names, text values: decoded exactly as the session decodes snapshot entries, so both compare."""
    out: dict[str, tuple[str, ...]] = {}
    for name, values in raw.items():
        if values:
            out[name.lower()] = tuple(attribute_text(name, v) for v in values)
    return out
