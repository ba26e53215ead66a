"""A share's own ACL (the "share permissions" of Windows' share properties), read from the server over srvsvc.

Beside each folder's descriptor, a server admits a user to a share only when the share's ACL grants them
(Samba: ``sharesec``, Windows: the share's Permissions). It is not a file's descriptor: the server hands it out
through the Server Service RPC interface, ``NetrShareGetInfo`` at level 502 (MS-SRVS 3.1.4.10), over the
``srvsvc`` named pipe of the ``IPC$`` share. Servers answer it to administrators only (Samba and Windows: an
ordinary account gets ERROR_ACCESS_DENIED); `read_share_acl` then says so in its result and the caller carries
on without it.

The few DCE/RPC bytes (MS-RPCE 2.2.2: a BIND to srvsvc 3.0 with NDR, one REQUEST, its RESPONSE fragments) are
built and read here with ``struct``; the pipe is opened and written through smbprotocol on a connection of its
own (`ShareAclReader`), whose session is set up by `share.open_session` once and kept for the next reads.
"""

from __future__ import annotations

import contextlib
import struct
import uuid
from dataclasses import dataclass

from smbprotocol.connection import Connection
from smbprotocol.exceptions import SMBException, SMBResponseException
from smbprotocol.header import NtStatus
from smbprotocol.open import (
    CreateDisposition,
    CreateOptions,
    FilePipePrinterAccessMask,
    ImpersonationLevel,
    Open,
    ShareAccess,
)
from smbprotocol.tree import TreeConnect

from collectors.smb.share import SmbError, one_line, open_session, status_name

SRVSVC = uuid.UUID("4b324fc8-1670-01d3-1278-5a47bf6ee188")
SRVSVC_VERSION = 3
NDR = uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860")
NDR_VERSION = 2
NETR_SHARE_GET_INFO = 16
LEVEL = 502
_BIND, _BIND_ACK, _REQUEST, _RESPONSE, _FAULT = 11, 12, 0, 2, 3
_FIRST, _LAST = 0x01, 0x02
_FRAGMENT = 4280
_HEADER = struct.Struct("<BBBB4sHHI")  # version, minor, type, flags, data representation, length, auth, call
_LITTLE_ENDIAN_ASCII_IEEE = b"\x10\x00\x00\x00"
ERROR_ACCESS_DENIED = 5


class SrvsvcError(RuntimeError):
    """The server's answer was not what MS-RPCE / MS-SRVS describe (or it refused the RPC itself)."""


@dataclass(frozen=True)
class ShareAcl:
    """A share's security descriptor as the server holds it (``None`` when it has none), or why it could not
    be read (``error``: ``ERROR_ACCESS_DENIED`` for an account that is not an administrator of the server)."""

    descriptor: bytes | None = None
    error: str | None = None


def bind_pdu(call_id: int = 1) -> bytes:
    """BIND to srvsvc 3.0 with the NDR transfer syntax, one presentation context (id 0)."""
    body = struct.pack("<HHIB3x", _FRAGMENT, _FRAGMENT, 0, 1)
    body += struct.pack("<HBx", 0, 1) + SRVSVC.bytes_le + struct.pack("<I", SRVSVC_VERSION)
    body += NDR.bytes_le + struct.pack("<I", NDR_VERSION)
    return _header(_BIND, call_id, len(body)) + body


def get_info_pdu(server: str, share: str, call_id: int = 2) -> bytes:
    """REQUEST NetrShareGetInfo(ServerName, NetName, 502): the stub in NDR (a unique and a reference pointer to
    conformant varying strings, then the level)."""
    stub = struct.pack("<I", 0x00020000) + _ndr_string(server) + _ndr_string(share) + struct.pack("<I", LEVEL)
    body = struct.pack("<IHH", len(stub), 0, NETR_SHARE_GET_INFO) + stub
    return _header(_REQUEST, call_id, len(body)) + body


def _header(kind: int, call_id: int, body: int) -> bytes:
    return _HEADER.pack(5, 0, kind, _FIRST | _LAST, _LITTLE_ENDIAN_ASCII_IEEE, _HEADER.size + body, 0, call_id)


def _ndr_string(text: str) -> bytes:
    encoded = (text + "\x00").encode("utf-16-le")
    count = len(encoded) // 2
    data = struct.pack("<III", count, 0, count) + encoded
    return data + b"\x00" * (-len(data) % 4)


def check_bind_ack(pdu: bytes) -> None:
    """The BIND_ACK accepted our one presentation context (MS-RPCE 2.2.2.4: after the secondary address, its
    results)."""
    kind = _kind(pdu)
    if kind != _BIND_ACK:
        raise SrvsvcError(f"srvsvc bind answered with PDU type {kind}, not BIND_ACK")
    (address_length,) = struct.unpack_from("<H", pdu, 24)
    position = 26 + address_length
    position += -position % 4
    count, result = struct.unpack_from("<B3xH", pdu, position)
    if count < 1 or result != 0:
        raise SrvsvcError(f"srvsvc bind: the server did not accept the presentation context (result {result})")


def response_stub(fragments: list[bytes]) -> bytes:
    """The stub data of a RESPONSE (its fragments joined); a FAULT raises with its status."""
    stub = b""
    for pdu in fragments:
        kind = _kind(pdu)
        if kind == _FAULT:
            (status,) = struct.unpack_from("<I", pdu, 24)
            raise SrvsvcError(f"srvsvc refused the call: DCE/RPC fault 0x{status:08x}")
        if kind != _RESPONSE:
            raise SrvsvcError(f"srvsvc answered with PDU type {kind}, not RESPONSE")
        (length, auth) = struct.unpack_from("<HH", pdu, 8)
        stub += pdu[24 : length - (auth + 8 if auth else 0)]
    return stub


def share_info_502(stub: bytes) -> tuple[int, bytes | None]:
    """(NET_API_STATUS, the share's security descriptor or None) from NetrShareGetInfo's answer: the union's
    level and pointer, SHARE_INFO_502_I's fixed part (40 bytes), its four strings, the descriptor as a
    conformant byte array, the status last."""
    (status,) = struct.unpack_from("<I", stub, len(stub) - 4)
    if status != 0:
        return status, None
    level, pointer = struct.unpack_from("<II", stub, 0)
    if level != LEVEL or pointer == 0:
        raise SrvsvcError(f"NetrShareGetInfo answered level {level} with {'no' if not pointer else 'an'} info")
    netname, _, remark, _, _, _, path, password, size, descriptor = struct.unpack_from("<10I", stub, 8)
    position = 48
    for string in (netname, remark, path, password):
        if string:
            _, _, actual = struct.unpack_from("<III", stub, position)
            position += 12 + 2 * actual
            position += -position % 4
    if not descriptor:
        return 0, None
    (count,) = struct.unpack_from("<I", stub, position)
    if count != size or position + 4 + count > len(stub) - 4:
        raise SrvsvcError(f"NetrShareGetInfo's descriptor is {count} bytes, its size says {size}")
    return 0, stub[position + 4 : position + 4 + count]


def _kind(pdu: bytes) -> int:
    if len(pdu) < 24 or pdu[0] != 5:
        raise SrvsvcError("srvsvc answered with something that is not a DCE/RPC 5 PDU")
    return pdu[2]


class ShareAclReader:
    """Reads one share's ACL over srvsvc, on a connection of its own kept from one read to the next: the session
    is set up (`share.open_session`: one line on an NTLM or Kerberos failure) once, not before every walk. A read
    whose kept session fails (the server restarted, the session expired) is tried once more on a new one; a
    failure of a new session raises `SmbError`, which the caller's reconnect handles."""

    def __init__(
        self,
        server: str,
        share: str,
        username: str,
        password: str,
        *,
        port: int = 445,
        encrypt: bool = False,
        auth: str = "negotiate",
        timeout: float = 30.0,
    ) -> None:
        self.server = server
        self.share = share
        self.port = port
        self._username = username
        self._password = password
        self._encrypt = encrypt
        self._auth = auth
        self._timeout = timeout
        self._connection: Connection | None = None
        self._tree: TreeConnect | None = None
        self.sessions = 0  # sessions set up so far

    @property
    def ipc(self) -> str:
        return f"\\\\{self.server}\\IPC$"

    def read(self) -> ShareAcl:
        """The share's ACL, or why the server would not give it (``error``); `SmbError` when no session could be
        had."""
        if self._tree is not None:
            try:
                return self._read(self._tree)
            except (SMBException, OSError, ValueError):
                self.close()  # the kept session failed: once more on a new one
        tree = self._connect()
        try:
            return self._read(tree)
        except (SMBException, OSError, ValueError) as exc:
            self.close()
            raise SmbError(f"cannot read the share ACL of \\\\{self.server}\\{self.share}: {one_line(exc)}") from None

    def close(self) -> None:
        connection, self._connection, self._tree = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(SMBException, OSError):
                connection.disconnect(True)

    def _connect(self) -> TreeConnect:
        with open_session(
            self.server,
            self._username,
            self._password,
            port=self.port,
            encrypt=self._encrypt,
            auth=self._auth,
            timeout=self._timeout,
            unc=self.ipc,
        ) as (connection, _session, tree):
            pass  # set up, and kept open after the block (see open_session)
        self._connection, self._tree = connection, tree
        self.sessions += 1
        return tree

    def _read(self, tree: TreeConnect) -> ShareAcl:
        """Open the srvsvc pipe, BIND, NetrShareGetInfo(502), close the pipe. Errors of the connection raise."""
        pipe = Open(tree, "srvsvc")
        try:
            pipe.create(
                ImpersonationLevel.Impersonation,
                FilePipePrinterAccessMask.FILE_READ_DATA
                | FilePipePrinterAccessMask.FILE_WRITE_DATA
                | FilePipePrinterAccessMask.FILE_READ_ATTRIBUTES
                | FilePipePrinterAccessMask.READ_CONTROL
                | FilePipePrinterAccessMask.SYNCHRONIZE,
                0,
                ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
                CreateDisposition.FILE_OPEN,
                CreateOptions.FILE_NON_DIRECTORY_FILE,
            )
        except SMBResponseException as exc:
            if exc.status in _SESSION_GONE:
                raise
            return ShareAcl(error=f"srvsvc pipe: {status_name(exc.status)}")
        try:
            pipe.write(bind_pdu(), 0)
            check_bind_ack(pipe.read(0, _FRAGMENT))
            pipe.write(get_info_pdu(self.server, self.share), 0)
            fragments = [pipe.read(0, _FRAGMENT)]
            while not fragments[-1][3] & _LAST:
                fragments.append(pipe.read(0, _FRAGMENT))
            status, descriptor = share_info_502(response_stub(fragments))
        except SrvsvcError as exc:
            return ShareAcl(error=str(exc))
        except SMBResponseException as exc:
            if exc.status in _SESSION_GONE:
                raise
            return ShareAcl(error=f"srvsvc: {status_name(exc.status)}")
        finally:
            with contextlib.suppress(SMBException, OSError):
                pipe.close()
        if status == ERROR_ACCESS_DENIED:
            return ShareAcl(error="ERROR_ACCESS_DENIED (only a server administrator may read a share's ACL)")
        if status != 0:
            return ShareAcl(error=f"NetrShareGetInfo answered WERROR 0x{status:08x}")
        return ShareAcl(descriptor=descriptor)


# a kept session the server no longer honours: set up a new one (MS-SMB2 3.3.5.2.9)
_SESSION_GONE = (0xC000035C, NtStatus.STATUS_USER_SESSION_DELETED, NtStatus.STATUS_NETWORK_NAME_DELETED)  # expired
