"""``permwatch check-config --connect`` against a real slapd, run as an operator would run it.

One line per ``[[ldap]]`` source: what it found (users, groups, the
accesslog), or one line saying why not — a size limit the account is held
to, a wrong password (never shown), a server that is not there — and a
non-zero exit whenever a source failed.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from uuid import uuid4

import pytest

from tests.integration.pipeline import permwatch_exe
from tests.integration.servers.slapd import READER_DN, LdapSite, Slapd
from tests.integration.test_ldap_faults import many_users

pytestmark = [pytest.mark.integration, pytest.mark.ldap]


def source(collector_id: str, uri: str, site: LdapSite, password_file: Path) -> str:
    return f"""
[[ldap]]
collector_id = "{collector_id}"
uri = "{uri}"
bind_dn = "{READER_DN}"
password_file = "{password_file}"
user_base = "{site.people}"
group_base = "{site.groups}"
timeout_seconds = 5
"""


def check_connect(tmp_path: Path, *sources: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "permwatch.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n' + "".join(sources), encoding="utf-8")
    return subprocess.run(
        [permwatch_exe(), "check-config", "--connect", str(config)], capture_output=True, text=True, timeout=120
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_each_source_gets_one_line_and_any_failure_a_non_zero_exit(slapd: Slapd, tmp_path: Path) -> None:
    site = slapd.add_site(f"c{uuid4().hex[:8]}")
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-" + slapd.reader_password, encoding="utf-8")
    good = check_connect(tmp_path, source("office", slapd.uri, site, slapd.reader_password_file))
    assert good.returncode == 0, good.stderr
    lines = good.stdout.splitlines()
    assert lines[0].endswith(": ok")
    [office] = lines[1:]
    assert office.startswith(f"ldap office ({slapd.uri} as {READER_DN}): ok: 9 users, 5 groups; accesslog cn=accesslog")
    assert "readable, newest write" in office and "no size or time limit hit" in office

    bad = check_connect(
        tmp_path,
        source("office", slapd.uri, site, slapd.reader_password_file),
        source("typo", slapd.uri, site, wrong),
        source("gone", f"ldap://127.0.0.1:{closed_port()}", site, slapd.reader_password_file),
        source("nolog", slapd.uri, site, slapd.reader_password_file) + 'accesslog_base = "cn=nolog"\n',
    )
    assert bad.returncode == 1
    assert bad.stderr == ""
    _, office, typo, gone, nolog = bad.stdout.splitlines()
    assert nolog.endswith(f": error: key 'accesslog_base': no entry cn=nolog visible to {READER_DN}"), nolog
    assert ": ok: 9 users, 5 groups" in office
    assert typo.startswith("ldap typo (") and typo.endswith(": error: invalidCredentials (result 49)"), typo
    assert gone.startswith("ldap gone (") and ": error: LDAPSocketOpenError" in gone, gone
    assert slapd.reader_password not in bad.stdout


def test_a_size_limit_on_the_account_is_one_line_naming_it(tmp_path: Path) -> None:
    with Slapd(tmp_path / "limited", reader_limits=None) as server:
        site = server.add_site("big")
        server.load_ldif(many_users(site, 600))
        result = check_connect(tmp_path, source("big", server.uri, site, server.reader_password_file))
    assert result.returncode == 1
    [_, line] = result.stdout.splitlines()
    assert line.startswith(f"ldap big ({server.uri} as {READER_DN}): error: ")
    assert "size limit" in line and "after 500 entries" in line and "size=unlimited" in line, line
