"""The remote collector's hand-built SMB2 messages against smbprotocol's own packing and parsing (issue 17).

Every request `collectors.smb.wire` builds must be byte for byte what smbprotocol's structure classes pack for
the same fields; every answer smbprotocol's classes pack must read back through `wire.split` and `wire.entries`
with the fields smbprotocol's own unpacking finds, compounds and async (interim) headers included.
"""

from __future__ import annotations

import struct

from smbprotocol.change_notify import CompletionFilter, SMB2ChangeNotifyRequest
from smbprotocol.connection import SMB2CancelRequest, SMB2Echo
from smbprotocol.file_info import FileAttributes, FileDirectoryInformation, FileInformationClass, InfoType
from smbprotocol.header import Commands, NtStatus, Smb2Flags, SMB2HeaderAsync, SMB2HeaderRequest, SMB2HeaderResponse
from smbprotocol.open import (
    CreateDisposition,
    CreateOptions,
    DirectoryAccessMask,
    ImpersonationLevel,
    QueryDirectoryFlags,
    ShareAccess,
    SMB2CloseRequest,
    SMB2CreateRequest,
    SMB2QueryDirectoryRequest,
    SMB2QueryDirectoryResponse,
    SMB2QueryInfoRequest,
    SMB2QueryInfoResponse,
)

from collectors.smb import wire

FILE_ID = bytes(range(16))
ACCESS = DirectoryAccessMask.READ_CONTROL | DirectoryAccessMask.FILE_LIST_DIRECTORY | DirectoryAccessMask.SYNCHRONIZE


def smbprotocol_create(name: str) -> bytes:
    """What `smbprotocol.open.Open.create` packs for a directory (its defaults: no oplock, no contexts)."""
    create = SMB2CreateRequest()
    create["impersonation_level"] = ImpersonationLevel.Impersonation
    create["desired_access"] = ACCESS
    create["file_attributes"] = FileAttributes.FILE_ATTRIBUTE_DIRECTORY
    create["share_access"] = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE
    create["create_disposition"] = CreateDisposition.FILE_OPEN
    create["create_options"] = CreateOptions.FILE_DIRECTORY_FILE
    create["buffer_path"] = name.encode("utf-16-le") if name else b"\x00\x00"
    return create.pack()


def test_create_of_a_folder_and_of_the_root_match_smbprotocol() -> None:
    for name in ("", "socialkontoret\\ledning", "å\\日本"):
        assert wire.create(name, ACCESS) == smbprotocol_create(name)


def test_the_fixed_requests_match_smbprotocol() -> None:
    query = SMB2QueryInfoRequest()
    query["info_type"] = InfoType.SMB2_0_INFO_SECURITY
    query["output_buffer_length"] = 65_536
    query["additional_information"] = 0x7
    query["file_id"] = FILE_ID
    assert wire.query_security(FILE_ID, 0x7, 65_536) == query.pack()

    for restart in (False, True):
        listing = SMB2QueryDirectoryRequest()
        listing["file_information_class"] = FileInformationClass.FILE_DIRECTORY_INFORMATION
        listing["flags"] = QueryDirectoryFlags.SMB2_RESTART_SCANS if restart else 0
        listing["file_id"] = FILE_ID
        listing["output_buffer_length"] = 65_536
        listing["buffer"] = "*".encode("utf-16-le")
        assert wire.query_directory(FILE_ID, 65_536, restart=restart) == listing.pack()

    close = SMB2CloseRequest()
    close["file_id"] = FILE_ID
    assert wire.close(FILE_ID) == close.pack()

    notify = SMB2ChangeNotifyRequest()
    notify["output_buffer_length"] = 4_096
    notify["file_id"] = FILE_ID
    notify["completion_filter"] = (
        CompletionFilter.FILE_NOTIFY_CHANGE_DIR_NAME | CompletionFilter.FILE_NOTIFY_CHANGE_SECURITY
    )
    assert wire.change_notify(FILE_ID, int(notify["completion_filter"].get_value()), 4_096) == notify.pack()

    assert wire.echo() == SMB2Echo().pack()


def test_a_request_header_matches_smbprotocol() -> None:
    body = wire.close(FILE_ID)
    header = SMB2HeaderRequest()
    header["credit_charge"] = 1
    header["command"] = Commands.SMB2_CLOSE
    header["credit_request"] = 9
    header["flags"].set_flag(Smb2Flags.SMB2_FLAGS_RELATED_OPERATIONS)
    header["flags"].set_flag(Smb2Flags.SMB2_FLAGS_SIGNED)
    header["next_command"] = 88
    header["message_id"] = 0x1_0000_0042
    header["tree_id"] = 0xDEAD
    header["session_id"] = 0x1234_5678_9ABC
    header["data"] = body
    ours = wire.header(
        wire.CLOSE,
        0x1_0000_0042,
        session_id=0x1234_5678_9ABC,
        tree_id=0xDEAD,
        credit_charge=1,
        credit_request=9,
        flags=wire.RELATED_OPERATIONS | wire.SIGNED,
        next_command=88,
    )
    assert ours + body == header.pack()


def test_a_cancel_by_message_id_and_by_async_id_matches_smbprotocol() -> None:
    """A CANCEL names the request it ends: by message id (a sync header), or by async id once the server's interim
    answer gave one (an async header: the flag set, the async id where Reserved and TreeId were)."""
    assert wire.cancel() == SMB2CancelRequest().pack()
    sync = SMB2HeaderRequest()
    sync["command"] = Commands.SMB2_CANCEL
    sync["flags"].set_flag(Smb2Flags.SMB2_FLAGS_SIGNED)
    sync["message_id"] = 77
    sync["tree_id"] = 0xDEAD
    sync["session_id"] = 0x1234
    sync["data"] = SMB2CancelRequest().pack()
    ours = wire.header(
        wire.CANCEL, 77, session_id=0x1234, tree_id=0xDEAD, credit_charge=0, credit_request=0, flags=wire.SIGNED
    )
    assert ours + wire.cancel() == sync.pack()

    async_ = SMB2HeaderAsync()
    async_["command"] = Commands.SMB2_CANCEL
    async_["flags"].set_flag(Smb2Flags.SMB2_FLAGS_ASYNC_COMMAND)
    async_["message_id"] = 78
    async_["async_id"] = 0x0000_0042_0000_0017
    async_["session_id"] = 0x1234
    async_["data"] = SMB2CancelRequest().pack()
    ours = wire.header(
        wire.CANCEL, 78, session_id=0x1234, tree_id=0xDEAD, credit_charge=0, credit_request=0, async_id=0x42_0000_0017
    )
    assert ours + wire.cancel() == async_.pack()
    ((answer, _),) = wire.split(ours + wire.cancel())  # read back as an answer's header would be
    assert answer.async_id == 0x42_0000_0017 and answer.flags & wire.ASYNC_COMMAND


def response(command: Commands, status: int, message_id: int, body: bytes, *, next_command: int = 0) -> bytes:
    header = SMB2HeaderResponse()
    header["command"] = command
    header["status"] = status
    header["credit_response"] = 3
    header["flags"].set_flag(Smb2Flags.SMB2_FLAGS_SERVER_TO_REDIR)
    header["message_id"] = message_id
    header["tree_id"] = 7
    header["session_id"] = 99
    header["next_command"] = next_command
    header["data"] = body
    return header.pack()


def test_a_compound_answer_splits_as_smbprotocol_reads_it() -> None:
    descriptor = b"\x01\x00\x04\x80" + bytes(16)
    info = SMB2QueryInfoResponse()
    info["buffer"] = descriptor
    first_body = info.pack()
    padding = b"\x00" * (-(64 + len(first_body)) % 8)
    first = response(Commands.SMB2_QUERY_INFO, NtStatus.STATUS_SUCCESS, 41, first_body + padding, next_command=0)
    first = first[:20] + struct.pack("<I", len(first)) + first[24:]  # chained to the next message
    empty = SMB2QueryDirectoryResponse()
    second = response(Commands.SMB2_QUERY_DIRECTORY, NtStatus.STATUS_NO_MORE_FILES, 42, empty.pack())

    (a, a_signed), (b, b_signed) = wire.split(first + second)
    assert (a.command, a.status, a.message_id, a.credit_response) == (wire.QUERY_INFO, 0, 41, 3)
    assert a.buffer == descriptor and a_signed == first
    assert (b.command, b.status, b.message_id) == (wire.QUERY_DIRECTORY, wire.STATUS_NO_MORE_FILES, 42)
    assert b_signed == second and a.async_id == b.async_id == 0
    for answer, signed in ((a, a_signed), (b, b_signed)):
        theirs = SMB2HeaderResponse()
        theirs.unpack(signed)
        assert answer.flags == theirs["flags"].get_value() and answer.body == theirs["data"].get_value()


def test_an_interim_answer_carries_its_async_id_where_smbprotocol_takes_it() -> None:
    interim = SMB2HeaderResponse()
    interim["command"] = Commands.SMB2_CHANGE_NOTIFY
    interim["status"] = NtStatus.STATUS_PENDING
    interim["flags"].set_flag(Smb2Flags.SMB2_FLAGS_SERVER_TO_REDIR)
    interim["flags"].set_flag(Smb2Flags.SMB2_FLAGS_ASYNC_COMMAND)
    interim["message_id"] = 5
    interim["reserved"] = 0x17  # an async header's AsyncId spans Reserved and TreeId
    interim["tree_id"] = 0x42
    interim["data"] = b"\x09\x00" + bytes(7)
    packed = interim.pack()
    ((answer, _),) = wire.split(packed)
    assert answer.status == wire.STATUS_PENDING and answer.flags & wire.ASYNC_COMMAND
    assert answer.async_id == int.from_bytes(packed[32:40], "little") == 0x0000_0042_0000_0017


def test_listing_entries_read_as_smbprotocol_reads_them() -> None:
    names = [(".", FileAttributes.FILE_ATTRIBUTE_DIRECTORY), ("ledning", 0x10), ("protokoll.docx", 0x20), ("ö", 0x410)]
    packed = []
    for number, (name, attributes) in enumerate(names):
        entry = FileDirectoryInformation()
        entry["file_attributes"] = attributes
        entry["file_name"] = name.encode("utf-16-le")
        data = entry.pack()
        data += b"\x00" * (-len(data) % 8)
        if number < len(names) - 1:
            data = struct.pack("<I", len(data)) + data[4:]
        packed.append(data)
    listing = SMB2QueryDirectoryResponse()
    listing["buffer"] = b"".join(packed)
    answer = response(Commands.SMB2_QUERY_DIRECTORY, 0, 8, listing.pack())
    ((parsed, _),) = wire.split(answer)
    assert wire.entries(parsed.buffer) == [(name, int(attributes)) for name, attributes in names]
