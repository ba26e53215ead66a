"""The LDAP collector where a directory's limits, outages and plain setups used to leave a wrong picture.

Against real OpenLDAP slapd servers: one like the shared fixture but with
the permwatch account left at slapd's default 500-entry size limit (a
truncated directory must be an error naming the account and the limit, and
an exemption must give every entry); writes that bypass the accesslog
(``slapmodify`` while slapd is stopped, a log entry removed) must be found
by the reconcile on reconnect and every ``reconcile_seconds``; a rename must
leave group members as the server holds them, with and without the refint
overlay; and after an outage a change is judged within seconds.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from collectors.ldap import LdapCollector
from collectors.ldap_session import DirectoryLimitExceeded
from permwatch.events import DirectoryUser, Event
from tests.integration.pipeline import wait_until
from tests.integration.servers.slapd import READER_DN, LdapSite, Slapd
from tests.integration.test_ldap_collector import Recorder, config_for, principals

pytestmark = [pytest.mark.integration, pytest.mark.ldap]


def many_users(site: LdapSite, count: int) -> str:
    """LDIF for ``count`` more posixAccount users under the site's people."""
    return "".join(
        f"dn: uid=u{i:04d},{site.people}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n"
        f"uid: u{i:04d}\ncn: U{i}\nsn: U{i}\nuidNumber: {40000 + i}\ngidNumber: 30002\n"
        f"homeDirectory: /home/u{i:04d}\n\n"
        for i in range(count)
    )


def users_in(events: list[Event]) -> set[str]:
    return {e.name for e in principals(events) if isinstance(e, DirectoryUser)}


def test_a_size_limit_is_an_error_naming_the_account_and_an_exemption_gives_every_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Slapd(tmp_path / "limited", reader_limits=None) as server:  # slapd's default: 500 entries a search
        site = server.add_site("big")
        server.load_ldif(many_users(site, 600))
        server.purge_accesslog()  # else the 600 adds in the log hit the limit first (the same error, for cn=accesslog)
        recorder = Recorder()
        state = tmp_path / "state.json"
        collector = LdapCollector(config_for(server, site, page_size=100), recorder, state_path=state)
        with pytest.raises(DirectoryLimitExceeded) as raised:
            collector.catch_up()
        message = str(raised.value)
        assert READER_DN in message and "size limit" in message and site.people in message, message
        assert "after 500 entries" in message, message
        assert recorder.events == [], "no truncated directory is published"
        assert not state.exists()

        # the running loop says the same, as an error, and keeps trying
        caplog.set_level(logging.INFO)
        stop = threading.Event()
        thread = threading.Thread(target=collector.run, args=(stop,), name="ldap-limited")
        thread.start()
        try:
            wait_until(lambda: "size limit" in caplog.text, "the limit to be logged", timeout=30)
        finally:
            stop.set()
            thread.join(10)
        assert not thread.is_alive()
        [record, *_] = [r for r in caplog.records if "size limit" in r.getMessage()]
        assert record.levelno == logging.ERROR and READER_DN in record.getMessage()
        assert "\n" not in record.getMessage()
        assert recorder.events == []
        assert server.reader_password not in caplog.text

        server.stop()
        server.reader_limits = "size=unlimited"
        server.start()
        exempt = LdapCollector(config_for(server, site, page_size=100), recorder, state_path=state)
        exempt.catch_up()
        exempt.close()
        assert len(users_in(recorder.events)) == 600 + 9
