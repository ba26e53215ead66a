"""One bound connection to a directory server, and the searches the LDAP collector makes.

Wraps ldap3 so the rest of the collector sees plain values: entries as a DN
plus a dict of lower-cased attribute names to text values, every search paged
(servers cap unpaged result sets). The password is held here and nowhere else;
nothing in this module logs or formats the ldap3 connection object, whose
``repr`` would show it. Every search's final result code is checked: a size,
time or administrative limit the server applied to the bind account is
:class:`DirectoryLimitExceeded` (naming the account and the limit), never a
silently shorter answer. :data:`RETRYABLE` lists the errors after which the
collector reconnects rather than stops.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from ldap3 import ANONYMOUS, BASE, NONE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import (
    LDAPAdminLimitExceededResult,
    LDAPBindError,
    LDAPCommunicationError,
    LDAPMaximumRetriesError,
    LDAPNoSuchObjectResult,
    LDAPOperationResult,
    LDAPResponseTimeoutError,
    LDAPSizeLimitExceededResult,
    LDAPSSLConfigurationError,
    LDAPStartTLSError,
    LDAPTimeLimitExceededResult,
)
from ldap3.core.results import RESULT_ADMIN_LIMIT_EXCEEDED, RESULT_SIZE_LIMIT_EXCEEDED, RESULT_TIME_LIMIT_EXCEEDED
from ldap3.utils.conv import escape_filter_chars

from collectors.ldap_entries import EntrySchema, RawEntry, attribute_text, normalize_dn
from collectors.ldap_settings import LdapCollectorConfig
from permwatch.config import ConfigError

RETRYABLE: tuple[type[Exception], ...] = (
    LDAPCommunicationError,
    LDAPBindError,
    LDAPStartTLSError,
    LDAPOperationResult,
    LDAPResponseTimeoutError,
    LDAPMaximumRetriesError,
)
"""Errors of the server or the network: reconnect with backoff."""

SearchResult = tuple[str, dict[str, tuple[str, ...]]]

LIMIT_NAMES = {
    RESULT_SIZE_LIMIT_EXCEEDED: "size limit",
    RESULT_TIME_LIMIT_EXCEEDED: "time limit",
    RESULT_ADMIN_LIMIT_EXCEEDED: "administrative limit",
}
"""Result codes that mean the server cut the answer short for this account, by what the limit is called."""

_LIMIT_ERRORS = (LDAPSizeLimitExceededResult, LDAPTimeLimitExceededResult, LDAPAdminLimitExceededResult)


class DirectoryLimitExceeded(Exception):
    """The server stopped a search at a limit it applies to the bind account: the answer is incomplete.

    Not a network failure but the server's configuration: the message names
    the account, the limit, the search base and how many entries came back,
    and says how to lift it. Whatever was read is discarded.
    """

    def __init__(self, *, where: str, account: str | None, limit: str, base: str, returned: int) -> None:
        self.limit = limit
        self.account = account
        self.returned = returned
        who = account or "the anonymous bind"
        # an administrative limit in slapd is most often size.unchecked (candidates examined) or size.pr (paging)
        more = " size.unchecked=unlimited size.pr=unlimited" if limit == "administrative limit" else ""
        super().__init__(
            f"{where} stopped a search of {base} at its {limit} for {who} after {returned} entries; "
            f'exempt the account (slapd: limits dn.exact="{account or "anonymous"}" size=unlimited '
            f"time=unlimited{more}; AD: MaxPageSize/MaxResultSetSize) — nothing from this search is used"
        )


class LdapSession:
    """A connection to ``config.uri``, bound as ``config.bind_dn``; open it before searching."""

    def __init__(self, config: LdapCollectorConfig, password: str | None) -> None:
        self.config = config
        self._password = password
        parts = urlsplit(config.uri)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            raise ValueError(f"ldap uri must be ldap://host[:port] or ldaps://host[:port], not {config.uri!r}")
        self.use_ssl = parts.scheme == "ldaps"
        self.host = parts.hostname
        self.port = parts.port or (636 if self.use_ssl else 389)
        self.where = f"{parts.scheme}://{self.host}:{self.port}"
        self.tls = tls_for(config, use_ssl=self.use_ssl)
        self._connection: Any = None

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    def open(self) -> None:
        """Connect, StartTLS when configured, bind; on failure leave nothing open and raise."""
        timeout = self.config.timeout_seconds
        server = Server(
            self.host, port=self.port, use_ssl=self.use_ssl, tls=self.tls, get_info=NONE, connect_timeout=timeout
        )
        connection = Connection(
            server,
            user=self.config.bind_dn,
            password=self._password,
            authentication=SIMPLE if self.config.bind_dn else ANONYMOUS,
            raise_exceptions=True,
            receive_timeout=max(1, math.ceil(timeout)),  # ldap3 packs it into a C long
            read_only=True,
            auto_referrals=False,
            return_empty_attributes=False,
        )
        try:
            connection.open()
            if self.config.start_tls and not self.use_ssl:
                connection.start_tls()
            connection.bind()
        except BaseException:
            _discard(connection)
            raise
        self._connection = connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            _discard(connection)

    def search(
        self, base: str, search_filter: str, attributes: Iterable[str], *, scope: str = SUBTREE
    ) -> Iterator[SearchResult]:
        """Every matching entry as (dn, {lower-case attribute: values}), fetched page by page."""
        if self._connection is None:
            raise LDAPCommunicationError("not connected")
        connection = self._connection
        pages = connection.extend.standard.paged_search(
            base,
            search_filter,
            scope,
            attributes=list(attributes),
            paged_size=self.config.page_size,
            generator=True,
        )
        returned = 0
        try:
            for item in pages:
                if item.get("type") != "searchResEntry":
                    continue  # referrals: not followed
                returned += 1
                yield item["dn"], _text_attributes(item.get("raw_attributes") or {})
        except _LIMIT_ERRORS as exc:
            raise self._limit_error(int(exc.result or 0), base, returned) from None
        # ldap3 does not raise for a size or time limit: the last page's result code says it
        code = (connection.result or {}).get("result")
        if isinstance(code, int) and code in LIMIT_NAMES:
            raise self._limit_error(code, base, returned)

    def _limit_error(self, code: int, base: str, returned: int) -> DirectoryLimitExceeded:
        limit = LIMIT_NAMES.get(code, f"limit (result {code})")
        return DirectoryLimitExceeded(
            where=self.where, account=self.config.bind_dn, limit=limit, base=base, returned=returned
        )

    def read(self, dn: str, attributes: Iterable[str]) -> RawEntry | None:
        """The entry at ``dn`` now, or None when there is none."""
        try:
            found = list(self.search(dn, "(objectClass=*)", attributes, scope=BASE))
        except LDAPNoSuchObjectResult:
            return None
        return RawEntry(found[0][0], found[0][1]) if found else None


def tls_for(config: LdapCollectorConfig, *, use_ssl: bool) -> Tls | None:
    """The TLS settings for ldaps:// or StartTLS (the server certificate is always verified), else None.

    A ``ca_file`` that is not there is a typo to fix, not an outage to retry:
    :class:`ConfigError` at start, rather than a collector that dies on its
    first connection.
    """
    if not (use_ssl or config.start_tls):
        return None
    try:
        return Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(config.ca_file) if config.ca_file else None)
    except LDAPSSLConfigurationError:
        raise ConfigError(
            f"ldap collector {config.collector_id!r}: key 'ca_file': {config.ca_file} does not exist"
        ) from None


def _text_attributes(raw: dict[str, list[bytes]]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for name, values in raw.items():
        if values:
            text = [attribute_text(name, v) for v in values]
            out[name.lower()] = tuple(text)
    return out


def _discard(connection: Any) -> None:
    """Close a connection whatever state it is in (ldap3 leaves the socket open when a connect fails)."""
    try:
        if not connection.closed:
            connection.unbind()
    except (LDAPCommunicationError, OSError):
        pass  # the server is gone already; the socket is closed below
    sock = getattr(connection, "socket", None)
    if sock is not None:
        sock.close()
        connection.socket = None


def class_filter(classes: Iterable[str]) -> str:
    """``(|(objectClass=a)(objectClass=b))`` for the given object classes."""
    return "(|" + "".join(f"(objectClass={escape_filter_chars(c)})" for c in sorted(classes)) + ")"


def read_directory(session: LdapSession, schema: EntrySchema) -> dict[str, RawEntry]:
    """Every in-scope user and group, keyed by normalized DN: a full snapshot."""
    entries: dict[str, RawEntry] = {}
    for base, classes in ((schema.user_base, schema.user_classes), (schema.group_base, schema.group_classes)):
        for dn, attrs in session.search(base, class_filter(classes), schema.wanted()):
            entry = RawEntry(dn, attrs)
            if schema.kind_of(entry) is not None:
                entries[normalize_dn(dn)] = entry
    return entries
