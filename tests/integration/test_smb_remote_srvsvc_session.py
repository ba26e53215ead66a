"""The share-ACL reader's SMB session (issue 17): set up by the same helper as the share's, kept between reads.

`ShareAclReader` reads a share's own ACL over srvsvc from a real smbd. Its session is set up by
`share.open_session`, as `SmbShare.connect`'s is: a refused NTLM login and a Kerberos failure (a realm whose KDC
does not answer, named in a krb5.conf of the test's own that points at a closed loopback port) are each one
`SmbError` line naming the account and ``IPC$``, never the password and never a traceback of the Kerberos
library's exception. Two reads set up one session, not one each; after the server is killed and started again
the next read sets up a new one by itself.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.smb.share import SmbError
from collectors.smb.srvsvc import ShareAclReader
from tests.integration.servers.samba_fs import ADMIN_USER, SambaFileServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="smbd serving other users and useradd need root"),
    pytest.mark.skipif(shutil.which("smbd") is None, reason="smbd missing: scripts/install.sh --test"),
]

WRONG = "Not-the-password-17"


@pytest.fixture
def samba(tmp_path: Path) -> Iterator[SambaFileServer]:
    with SambaFileServer(tmp_path / "samba", {"anna": "Anna-pw-17s"}) as server:
        yield server


def test_two_reads_share_one_session_and_a_restarted_server_gets_a_new_one(samba: SambaFileServer) -> None:
    account, password = samba.credentials(ADMIN_USER).split("%", 1)
    reader = ShareAclReader(samba.host, "share", account, password, timeout=10)
    try:
        first, second = reader.read(), reader.read()
        assert reader.sessions == 1
        assert first.error is None and second == first  # answered (Samba gives a non-root admin no descriptor)
        samba._server.kill()  # the kept session dies with smbd
        samba.start()
        assert reader.read() == first
        assert reader.sessions == 2
    finally:
        reader.close()


def test_a_refused_ntlm_login_is_one_line_without_the_password(samba: SambaFileServer) -> None:
    reader = ShareAclReader(samba.host, "share", samba.account("anna"), WRONG, auth="ntlm", timeout=10)
    with pytest.raises(SmbError) as raised:
        reader.read()
    message = str(raised.value)
    assert message == f"cannot open \\\\{samba.host}\\IPC$ as {samba.account('anna')}: STATUS_LOGON_FAILURE"
    assert reader.sessions == 0


def test_a_kerberos_failure_is_one_line_not_a_traceback(
    samba: SambaFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gssapi", reason="Kerberos needs the kerberos extra: scripts/install.sh --test")
    realm = "PERMWATCH-NO-KDC.TEST"
    config = tmp_path / "krb5.conf"
    config.write_text(  # no DNS look-up: the realm's only KDC is a closed port on loopback
        f"[libdefaults]\n default_realm = {realm}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n"
        f"[realms]\n {realm} = {{\n  kdc = 127.0.0.1:1\n }}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("KRB5_CONFIG", str(config))
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'ccache'}")
    principal = f"svc-permwatch@{realm}"
    reader = ShareAclReader(samba.host, "share", principal, WRONG, auth="kerberos", timeout=10)
    with pytest.raises(SmbError) as raised:
        reader.read()
    message = str(raised.value)
    assert message.startswith(f"cannot open \\\\{samba.host}\\IPC$ as {principal}: Kerberos"), message
    assert "\n" not in message and WRONG not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # `from None`: no chained trace
