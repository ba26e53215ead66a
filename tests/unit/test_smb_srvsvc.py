"""The share ACL's srvsvc bytes and its form in ``smb.share`` (issue 17), without a server.

The real exchange is tested against Samba in tests/integration/test_smb_remote_share_acl.py; here the edges a
server rarely shows: a FAULT, a refusal (WERROR), a BIND_ACK that rejects the context, a NULL DACL, a
descriptor that does not decode.
"""

from __future__ import annotations

import struct

import pytest

from collectors.smb import srvsvc
from collectors.smb.collector import share_acl_of


def pdu(kind: int, body: bytes, flags: int = 0x03) -> bytes:
    return struct.pack("<BBBB4sHHI", 5, 0, kind, flags, b"\x10\x00\x00\x00", 16 + len(body), 0, 2) + body


def test_a_fault_says_its_status() -> None:
    with pytest.raises(srvsvc.SrvsvcError, match="0x00000005"):
        srvsvc.response_stub([pdu(3, struct.pack("<IHBBI", 0, 0, 0, 0, 5))])


def test_fragments_join_into_one_stub() -> None:
    first = pdu(2, struct.pack("<IHBB", 6, 0, 0, 0) + b"abc", flags=0x01)
    last = pdu(2, struct.pack("<IHBB", 6, 0, 0, 0) + b"def", flags=0x02)
    assert srvsvc.response_stub([first, last]) == b"abcdef"


def test_a_refusal_is_its_werror_and_no_descriptor() -> None:
    assert srvsvc.share_info_502(struct.pack("<II", 502, 0) + struct.pack("<I", 5)) == (5, None)


def test_a_bind_ack_that_rejects_the_context_is_an_error() -> None:
    address = b"\\PIPE\\srvsvc\x00"
    body = struct.pack("<HHIH", 4280, 4280, 1, len(address)) + address
    body += b"\x00" * (-(16 + len(body)) % 4)
    srvsvc.check_bind_ack(pdu(12, body + struct.pack("<B3xH", 1, 0) + bytes(22)))
    with pytest.raises(srvsvc.SrvsvcError, match="did not accept"):
        srvsvc.check_bind_ack(pdu(12, body + struct.pack("<B3xH", 1, 2) + bytes(22)))


def test_the_share_acl_form_of_each_answer() -> None:
    null_dacl = struct.pack("<BBHIIII", 1, 0, 0x8000, 0, 0, 0, 0)  # self-relative, no DACL present
    acl, error = share_acl_of(null_dacl, None)
    assert (
        error is None
        and acl is not None
        and [(a.type, a.trustee, a.mask) for a in acl] == [("allow", "S-1-1-0", 0x001F01FF)]
    )
    assert share_acl_of(None, "ERROR_ACCESS_DENIED") == (None, "ERROR_ACCESS_DENIED")
    acl, error = share_acl_of(None, None)
    assert acl is None and error is not None and "administrators" in error
    acl, error = share_acl_of(b"\x01\x00", None)
    assert acl is None and error is not None and error.startswith("share descriptor does not decode")
