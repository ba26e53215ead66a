"""The bytes of the few SMB2 messages the remote collector sends after its session is set up, and of their answers.

smbprotocol builds and parses every message through its generic structure classes: ~80 Python calls per field,
which made its client CPU the bound of a remote walk (profiled: 0.67 ms of client CPU per folder, three quarters
of it packing and unpacking headers and bodies). The messages a walk and the watches need are few and fixed
(MS-SMB2 2.2): CREATE, QUERY_INFO, QUERY_DIRECTORY, CLOSE, CHANGE_NOTIFY, CANCEL, ECHO. Here each is one
``struct.pack`` and each answer one ``struct.unpack_from``; the unit tests check every request against
smbprotocol's own packing and every parse against its own parsing. Negotiation and authentication stay
smbprotocol's (`share.py`); signing and encryption are applied by `channel.py`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PROTOCOL = b"\xfeSMB"
HEADER_BYTES = 64
_HEADER = struct.Struct("<4sHHIHHIIQIIQ16s")

# commands (MS-SMB2 2.2.1.2)
CREATE, CLOSE, CANCEL, ECHO, QUERY_DIRECTORY, CHANGE_NOTIFY, QUERY_INFO = 0x05, 0x06, 0x0C, 0x0D, 0x0E, 0x0F, 0x10
# header flags
SERVER_TO_REDIR, ASYNC_COMMAND, RELATED_OPERATIONS, SIGNED, DFS_OPERATIONS = 0x1, 0x2, 0x4, 0x8, 0x10000000
ASYNC_NOTIFICATION = 0xFFFFFFFFFFFFFFFF  # the message id of an unsolicited message (an oplock break)
RELATED_FILE = b"\xff" * 16  # "the file opened by the CREATE earlier in this compound"

STATUS_SUCCESS = 0x00000000
STATUS_PENDING = 0x00000103
STATUS_NO_MORE_FILES = 0x80000006
STATUS_NOTIFY_ENUM_DIR = 0x0000010C
STATUS_NOTIFY_CLEANUP = 0x0000010B
STATUS_CANCELLED = 0xC0000120

FILE_DIRECTORY_INFORMATION = 0x01
SECURITY_INFO = 0x03
RESTART_SCANS = 0x01
_IMPERSONATION = 2
_FILE_OPEN = 1
_FILE_DIRECTORY_FILE = 0x1
_SHARE_ALL = 0x7  # read, write, delete: never lock anybody out of a folder being read

_CREATE = struct.Struct("<HBBIQQIIIIIHHII")  # 56 bytes, then the name
_QUERY_INFO = struct.Struct("<HBBIHHIII16s")  # 40 bytes, no input buffer
_QUERY_DIRECTORY = struct.Struct("<HBBI16sHHI")  # 32 bytes, then the pattern
_CLOSE = struct.Struct("<HHI16s")
_CHANGE_NOTIFY = struct.Struct("<HHI16sII")
_ECHO = struct.Struct("<HH")  # ECHO and CANCEL: structure size 4, reserved
_BUFFER_ANSWER = struct.Struct("<HHI")  # QUERY_INFO, QUERY_DIRECTORY, CHANGE_NOTIFY answers: size, offset, length
_STAR = "*".encode("utf-16-le")


def create(name: str, access: int) -> bytes:
    """Open the directory ``name`` (backslashes, share-relative, ``""`` the root) for ``access``."""
    encoded = name.encode("utf-16-le")
    body = _CREATE.pack(
        57, 0, 0, _IMPERSONATION, 0, 0, access, 0x10, _SHARE_ALL, _FILE_OPEN, _FILE_DIRECTORY_FILE,
        HEADER_BYTES + _CREATE.size, len(encoded), 0, 0,
    )  # fmt: skip
    return body + (encoded or b"\x00\x00")  # the buffer is never empty (as smbprotocol and Windows send it)


def query_security(file_id: bytes, additional_information: int, output: int) -> bytes:
    """QUERY_INFO of the security descriptor (owner, group, DACL… as ``additional_information`` says)."""
    return _QUERY_INFO.pack(41, SECURITY_INFO, 0, output, 0, 0, 0, additional_information, 0, file_id)


def query_directory(file_id: bytes, output: int, *, restart: bool = False) -> bytes:
    """QUERY_DIRECTORY ``*`` as FILE_DIRECTORY_INFORMATION."""
    flags = RESTART_SCANS if restart else 0
    fixed = _QUERY_DIRECTORY.pack(
        33, FILE_DIRECTORY_INFORMATION, flags, 0, file_id, HEADER_BYTES + _QUERY_DIRECTORY.size, len(_STAR), output
    )
    return fixed + _STAR


def close(file_id: bytes) -> bytes:
    return _CLOSE.pack(24, 0, 0, file_id)


def change_notify(file_id: bytes, completion_filter: int, output: int) -> bytes:
    """A non-recursive CHANGE_NOTIFY."""
    return _CHANGE_NOTIFY.pack(32, 0, output, file_id, completion_filter, 0)


def echo() -> bytes:
    return _ECHO.pack(4, 0)


def cancel() -> bytes:
    """CANCEL (MS-SMB2 2.2.30): its header names the request cancelled (its message id, or its async id)."""
    return _ECHO.pack(4, 0)


def header(
    command: int,
    message_id: int,
    *,
    session_id: int,
    tree_id: int,
    credit_charge: int,
    credit_request: int,
    flags: int = 0,
    next_command: int = 0,
    async_id: int = 0,
) -> bytes:
    """A request's header; with ``async_id`` (a CANCEL of a request gone async) the ASYNC flag is set and the
    async id takes the place of Reserved and TreeId (MS-SMB2 2.2.1.1)."""
    reserved = 0
    if async_id:
        flags |= ASYNC_COMMAND
        reserved, tree_id = async_id & 0xFFFF_FFFF, async_id >> 32
    return _HEADER.pack(
        PROTOCOL, HEADER_BYTES, credit_charge, 0, command, credit_request, flags, next_command, message_id, reserved,
        tree_id, session_id, b"\x00" * 16,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Answer:
    """One message of what the server sent: its header's fields and its body (the bytes after the header, up to
    the next message of a compound, padding included)."""

    command: int
    status: int
    flags: int
    message_id: int
    credit_response: int
    async_id: int
    body: bytes

    @property
    def buffer(self) -> bytes:
        """The buffer of a QUERY_INFO, QUERY_DIRECTORY or CHANGE_NOTIFY answer (its offset counts from the
        header)."""
        _, offset, length = _BUFFER_ANSWER.unpack_from(self.body)
        start = offset - HEADER_BYTES
        return self.body[start : start + length]

    @property
    def file_id(self) -> bytes:
        """A CREATE answer's FileId (MS-SMB2 2.2.14: after sizes, times and attributes)."""
        return self.body[64:80]


def split(packet: bytes) -> list[tuple[Answer, bytes]]:
    """Each message of a (possibly compounded) packet, with the exact bytes its signature covers."""
    messages = []
    position = 0
    while True:
        (_, _, _, status, command, credit_response, flags, following, message_id, reserved, tree_id, _, _) = (
            _HEADER.unpack_from(packet, position)
        )
        end = position + following if following else len(packet)
        async_id = (tree_id << 32 | reserved) if flags & ASYNC_COMMAND else 0
        answer = Answer(
            command, status, flags, message_id, credit_response, async_id, packet[position + HEADER_BYTES : end]
        )
        messages.append((answer, packet[position:end]))
        if not following:
            return messages
        position = end


def entries(buffer: bytes) -> list[tuple[str, int]]:
    """(name, attributes) of each FILE_DIRECTORY_INFORMATION entry (MS-FSCC 2.4.10): next-entry offset at 0,
    attributes at 56, name length at 60, the UTF-16 name at 64."""
    found, position = [], 0
    while position + 64 <= len(buffer):
        (following,) = struct.unpack_from("<I", buffer, position)
        attributes, size = struct.unpack_from("<II", buffer, position + 56)
        found.append((buffer[position + 64 : position + 64 + size].decode("utf-16-le"), attributes))
        if not following:
            break
        position += following
    return found
