"""A Kerberos failure of the remote SMB collector's session setup is told as one line: the reason, or what to
install; the connection attempt then fails like any other (`SmbError`), so the loop retries with backoff."""

from __future__ import annotations

import pytest
from spnego.exceptions import SpnegoError

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
