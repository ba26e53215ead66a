"""A Kerberos failure of the remote SMB collector's session setup is told as one line: the reason, or what to
install; the connection attempt then fails like any other (`SmbError`), so the loop retries with backoff. A
username in NTLM's ``DOMAIN\\name`` form with ``auth = "kerberos"`` is refused when the config loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from spnego.exceptions import SpnegoError

from collectors.smb.settings import SmbCollectorConfig
from collectors.smb.share import KERBEROS_ERRORS, SmbError, SmbShare, kerberos_reason


def test_a_missing_library_says_what_to_install() -> None:
    reason = kerberos_reason(ImportError("GSSAPIProxy requires the Python gssapi library: No module named 'krb5'"))
    assert reason == "Kerberos needs the Python packages gssapi and krb5 (pip install 'permwatch[kerberos]')"


def test_the_library_s_words_become_one_short_line() -> None:
    reason = kerberos_reason(RuntimeError("Preauthentication failed\n  -1765328360" + " x" * 400))
    assert reason.startswith("Kerberos: Preauthentication failed -1765328360 x")
    assert "\n" not in reason and len(reason) <= len("Kerberos: ") + 300


def test_spnego_and_import_errors_are_among_those_caught() -> None:
    assert SpnegoError in KERBEROS_ERRORS and ImportError in KERBEROS_ERRORS


def test_an_unreachable_server_is_still_an_smb_error() -> None:
    share = SmbShare("127.0.0.1", "share", "svc@EXAMPLE.ORG", "pw", port=1, auth="kerberos", timeout=2)
    with pytest.raises(SmbError, match=r"cannot reach 127\.0\.0\.1:1 "):
        share.connect()


@pytest.mark.parametrize("username", ["KOMMUN\\svc-permwatch", "svc-permwatch"])
def test_kerberos_wants_a_principal_name(username: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"username: with auth = \"kerberos\" give name@REALM"):
        SmbCollectorConfig(
            server="fs.kommun.local",
            share="social",
            username=username,
            password_file=tmp_path / "pw",
            auth="kerberos",
            path_prefix="/smb/fs/social",
        )


def test_a_principal_name_is_accepted_for_kerberos(tmp_path: Path) -> None:
    settings = SmbCollectorConfig(
        server="fs.kommun.local",
        share="social",
        username="svc-permwatch@KOMMUN.LOCAL",
        password_file=tmp_path / "pw",
        auth="kerberos",
        path_prefix="/smb/fs/social",
    )
    assert settings.auth == "kerberos"
