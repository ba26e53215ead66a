"""``permwatch check-config --connect``: bind to each LDAP source once and say what the collector would see.

For one ``[[ldap]]`` table it connects and binds as the collector would
(same TLS settings, same password source), reads the in-scope users and
groups once (paged, every result code checked, so a size or time limit the
server applies to the account is reported rather than a short count), and,
in accesslog mode, reads the log's write entries as the collector's first
start does. The answer is one line: what was found, or why it could not be.
The password is never part of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ldap3.core.exceptions import LDAPException, LDAPNoSuchObjectResult, LDAPOperationResult

from collectors.ldap import read_password
from collectors.ldap_accesslog import AccesslogMode
from collectors.ldap_entries import EntrySchema, parse_generalized_time
from collectors.ldap_session import DirectoryLimitExceeded, LdapSession, read_directory
from collectors.ldap_settings import LdapCollectorConfig
from permwatch.config import ConfigError


@dataclass(frozen=True)
class SourceCheck:
    """What one source answered: ``ok`` and a one-line ``summary``."""

    ok: bool
    summary: str


def check_source(config: LdapCollectorConfig, environ: Mapping[str, str] | None = None) -> SourceCheck:
    """Bind, read the directory once and (accesslog mode) the log; never raises for the server's answer."""
    password = read_password(config, environ)
    try:
        session = LdapSession(config, password)
    except ValueError as exc:
        raise ConfigError(f"ldap collector {config.collector_id!r}: key 'uri': {exc}") from None
    who = config.bind_dn or "anonymous"
    where = f"ldap {config.collector_id} ({session.where} as {who})"
    schema = EntrySchema.from_config(config)
    try:
        session.open()
        entries = read_directory(session, schema)
        kinds = [schema.kind_of(entry) for entry in entries.values()]
        found = f"{kinds.count('user')} users, {kinds.count('group')} groups"
        if config.mode == "accesslog":
            try:
                found += "; " + _accesslog(session, config, schema)
            except LDAPNoSuchObjectResult:
                base = config.accesslog_base
                return SourceCheck(False, f"{where}: error: key 'accesslog_base': no entry {base} visible to {who}")
        return SourceCheck(True, f"{where}: ok: {found}; no size or time limit hit")
    except DirectoryLimitExceeded as exc:
        return SourceCheck(False, f"{where}: error: {exc}")
    except (LDAPException, OSError) as exc:
        text = _describe(exc)
        if password:
            text = text.replace(password, "***")
        return SourceCheck(False, f"{where}: error: {text}")
    finally:
        session.close()


def _accesslog(session: LdapSession, config: LdapCollectorConfig, schema: EntrySchema) -> str:
    mode = AccesslogMode(config, schema)
    mode.mark(session)
    head = mode.cursor.get("last")
    if head is None:
        return (
            f"accesslog {config.accesslog_base}: no write entries visible "
            "(an empty log, or the account may not read it)"
        )
    newest = parse_generalized_time(head)
    return (
        f"accesslog {config.accesslog_base} readable, newest write {newest:%Y-%m-%d %H:%M:%S} UTC"
        if newest
        else (f"accesslog {config.accesslog_base} readable, newest reqStart {head}")
    )


def _describe(exc: BaseException) -> str:
    """The server's answer by its name (``invalidCredentials (result 49)``), else the exception's one line."""
    if isinstance(exc, LDAPOperationResult) and exc.description:
        detail = f": {exc.message}" if exc.message else ""
        return f"{exc.description} (result {exc.result}){detail}".replace("\n", " ")
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")
