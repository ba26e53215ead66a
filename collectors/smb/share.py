"""One authenticated SMB2/3 connection to one share, and a folder read in one compounded request.

smbprotocol has no helper for a security descriptor (its high-level ``smbclient`` never sets QUERY_INFO's
``additional_information``), so the requests are built from its structures: one *related compound* per folder
(MS-SMB2 3.2.4.1.4) — CREATE the directory, QUERY_INFO its descriptor (owner, group, DACL), QUERY_DIRECTORY,
CLOSE — costs one round trip. When the listing's answer is so full that one more entry might not have fitted, the
folder is listed again on a handle of its own (`_full_listing`); the answers are sliced with ``struct`` and the
fixed requests built once, since smbprotocol's structures, not the network, bound a walk (profiled: 8.3 million
Python calls for 1,000 folders before, 5.1 million after).

`send_folders` only sends; `receive_folder` collects the answers, so a caller can keep several folders in flight
(see `tree.py`). `open_folders` and `send_reads` serve handles kept open (the change notifications' handles:
`notify.py`), read without a CREATE and CLOSE each time. Each request in flight costs one credit: `connect` asks
the server for `credits` of them with an ECHO, as Windows clients do, instead of growing one at a time.
"""

from __future__ import annotations

import contextlib
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from smbprotocol.connection import Connection
from smbprotocol.exceptions import NoMoreFiles, SMBException, SMBResponseException
from smbprotocol.file_info import FileAttributes, FileInformationClass, InfoType
from smbprotocol.header import NtStatus
from smbprotocol.open import (
    CreateDisposition,
    CreateOptions,
    DirectoryAccessMask,
    ImpersonationLevel,
    Open,
    QueryDirectoryFlags,
    ShareAccess,
    SMB2CloseRequest,
    SMB2QueryDirectoryRequest,
    SMB2QueryInfoRequest,
)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect
from spnego.exceptions import SpnegoError

# SECURITY_INFORMATION bits for QUERY_INFO (MS-DTYP 2.4.7): owner, group and DACL; no SACL (needs a privilege)
OWNER_SECURITY_INFORMATION = 0x1
GROUP_SECURITY_INFORMATION = 0x2
DACL_SECURITY_INFORMATION = 0x4
_SECURITY = OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION
_HEADER_BYTES = 64
_CREATE_FILE_ID = 64  # MS-SMB2 2.2.14: a CREATE answer's FileId, after sizes, times and attributes
_RELATED = b"\xff" * 16  # "the file opened by the CREATE earlier in this compound"
_LISTING_BYTES = 65_536  # one credit's worth of answer
_LONGEST_ENTRY = 64 + 2 * 255 + 8  # a FILE_DIRECTORY_INFORMATION entry with a 255-character name, aligned
_DESCRIPTOR_BYTES = 65_536  # a descriptor with ~1,500 ACEs; servers answer BUFFER_TOO_SMALL beyond
MESSAGES_PER_FOLDER = 4  # credits one folder's compound takes while in flight
READ_ACCESS = (
    DirectoryAccessMask.READ_CONTROL
    | DirectoryAccessMask.FILE_LIST_DIRECTORY
    | DirectoryAccessMask.FILE_READ_ATTRIBUTES
    | DirectoryAccessMask.SYNCHRONIZE
)


class SmbError(RuntimeError):
    """The share could not be reached or the session could not be set up (the message says which, no password)."""


@dataclass(frozen=True)
class RemoteFolder:
    """What one compounded read returned for a folder.

    ``path`` is share-relative with ``/`` separators (``""`` is the share's root). ``descriptor`` is the
    self-relative security descriptor as the server sent it (decode with `collectors.ntacl`), ``None`` when the
    folder could not be read; ``error`` then names the NTSTATUS (``STATUS_ACCESS_DENIED``…)."""

    path: str
    descriptor: bytes | None
    subfolders: tuple[str, ...] = ()
    error: str | None = None


@dataclass
class InFlight:
    """A folder's read sent and not yet received: smbprotocol's request objects, in the order sent.

    ``opened`` and ``closed`` are the CREATE and CLOSE of a read with a handle of its own (`send_folders`);
    a read on a handle kept open (`send_reads`) has neither. ``error`` is set for a folder that failed before its
    read was sent (it could not be opened)."""

    path: str
    security: object | None = None
    listing: object | None = None
    opened: object | None = None
    closed: object | None = None
    error: str | None = None

    @property
    def requests(self) -> list[object]:
        return [r for r in (self.opened, self.security, self.listing, self.closed) if r is not None]


class SmbShare:
    """``\\\\server\\share`` opened as one user; use as a context manager or call `connect` and `close`."""

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
        credits: int = 64,
        timeout: float = 30.0,
    ) -> None:
        self.server = server
        self.share = share
        self.port = port
        self._username = username
        self._password = password
        self._encrypt = encrypt
        self._auth = auth
        self.credits = credits
        self._timeout = timeout
        self._connection: Connection | None = None
        self._session: Session | None = None
        self._tree: TreeConnect | None = None
        # built once: smbprotocol's structures cost more to build than to send (measured: a third of a walk)
        self._fixed = (_query_security(), _query_directory(), _close())

    @property
    def unc(self) -> str:
        return f"\\\\{self.server}\\{self.share}"

    def __enter__(self) -> SmbShare:
        self.connect()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Negotiate, authenticate, connect the tree and ask for credits; `SmbError` says what failed."""
        connection = Connection(uuid.uuid4(), self.server, self.port, require_signing=True)
        try:
            connection.connect(timeout=self._timeout)
        except (OSError, SMBException, ValueError) as exc:
            raise SmbError(f"cannot reach {self.server}:{self.port} over SMB: {exc}") from None
        try:
            session = Session(
                connection,
                self._username,
                self._password,
                require_encryption=self._encrypt,
                auth_protocol=self._auth,
            )
            session.connect()
            tree = TreeConnect(session, self.unc)
            tree.connect()
            if self.credits > 1:
                connection.echo(sid=session.session_id, credit_request=self.credits)
        except (SMBException, OSError, ValueError) as exc:
            connection.disconnect(True)
            reason = status_name(exc) if isinstance(exc, SMBResponseException) else type(exc).__name__
            raise SmbError(f"cannot open {self.unc} as {self._username}: {reason}") from None
        except KERBEROS_ERRORS as exc:
            connection.disconnect(True)
            raise SmbError(f"cannot open {self.unc} as {self._username}: {kerberos_reason(exc)}") from None
        self._connection, self._session, self._tree = connection, session, tree

    def close(self) -> None:
        connection, self._connection, self._session, self._tree = self._connection, None, None, None
        if connection is not None:
            with contextlib.suppress(SMBException, OSError):  # the server is gone already: nothing to release
                connection.disconnect(True)

    @property
    def connected(self) -> bool:
        return self._tree is not None

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            raise SmbError(f"{self.unc} is not connected")
        return self._connection

    @property
    def session(self) -> Session:
        if self._session is None:
            raise SmbError(f"{self.unc} is not connected")
        return self._session

    @property
    def tree(self) -> TreeConnect:
        if self._tree is None:
            raise SmbError(f"{self.unc} is not connected")
        return self._tree

    # -- handles kept open ---------------------------------------------------------------------------------------

    def open_folders(self, paths: Sequence[str], access: int) -> list[bytes | SMBResponseException]:
        """Open each folder with ``access`` in one unrelated compound (one send, one round trip for the lot): its
        file id, or the error the server answered. The caller closes what it opened (`close_handle`)."""
        connection, session, tree = self.connection, self.session, self.tree
        creates = [
            Open(tree, smb_name(path)).create(
                ImpersonationLevel.Impersonation,
                access,
                FileAttributes.FILE_ATTRIBUTE_DIRECTORY,
                ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE,
                CreateDisposition.FILE_OPEN,
                CreateOptions.FILE_DIRECTORY_FILE,
                send=False,
            )[0]
            for path in paths
        ]
        if not creates:
            return []
        requests = connection.send_compound(creates, session.session_id, tree.tree_connect_id, related=False)
        opened: list[bytes | SMBResponseException] = []
        for request in requests:
            try:
                data = connection.receive(request, timeout=self._timeout)["data"].get_value()
            except SMBResponseException as exc:
                opened.append(exc)
            else:
                opened.append(bytes(data[_CREATE_FILE_ID : _CREATE_FILE_ID + 16]))
        return opened

    def close_handle(self, file_id: bytes) -> None:
        close = SMB2CloseRequest()
        close["file_id"] = file_id
        with contextlib.suppress(SMBResponseException):  # closed already (the folder went away)
            self.connection.receive(self.connection.send(close, self.session.session_id, self.tree.tree_connect_id))

    # -- one folder ------------------------------------------------------------

    def read_folder(self, path: str) -> RemoteFolder:
        """The folder's descriptor and subfolders (one round trip, two when it has very many entries)."""
        return self.receive_folder(self._send_folder(path))

    def send_folders(self, paths: Sequence[str]) -> list[InFlight]:
        """Each folder's read as a related compound of its own (CREATE, QUERY_INFO, QUERY_DIRECTORY, CLOSE)."""
        return [self._send_folder(path) for path in paths]

    def _send_folder(self, path: str) -> InFlight:
        connection, session, tree = self.connection, self.session, self.tree
        create, _ = Open(tree, smb_name(path)).create(
            ImpersonationLevel.Impersonation,
            READ_ACCESS,
            FileAttributes.FILE_ATTRIBUTE_DIRECTORY,
            ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE,
            CreateDisposition.FILE_OPEN,
            CreateOptions.FILE_DIRECTORY_FILE,
            send=False,
        )
        messages = [create, *self._fixed]  # the rest of the compound is the same for every folder
        opened, security, listing, closed = connection.send_compound(
            messages, session.session_id, tree.tree_connect_id, related=True
        )
        return InFlight(path, security, listing, opened, closed)

    def send_reads(self, handles: Sequence[tuple[str, bytes]]) -> list[InFlight]:
        """Read folders through handles already open (path, file id): QUERY_INFO and QUERY_DIRECTORY (from the
        start) of them all in one unrelated compound, one send."""
        messages: list[object] = []
        for _, file_id in handles:
            messages += [_query_security(file_id), _query_directory(file_id, restart=True)]
        if not messages:
            return []
        requests = self.connection.send_compound(messages, self.session.session_id, self.tree.tree_connect_id)
        return [InFlight(path, *requests[2 * i : 2 * i + 2]) for i, (path, _) in enumerate(handles)]

    def receive_folder(self, sent: InFlight) -> RemoteFolder:
        """Every answer is received (even after a failure: each is owed to the connection)."""
        if sent.error is not None:
            return RemoteFolder(sent.path, None, error=sent.error)
        answers = {}
        for name in ("opened", "security", "listing", "closed"):
            request = getattr(sent, name)
            if request is not None:
                try:
                    answers[name] = self.connection.receive(request, timeout=self._timeout)
                except SMBResponseException as exc:
                    answers[name] = exc
        for name in ("opened", "security"):
            if isinstance(answers.get(name), SMBResponseException):
                return RemoteFolder(sent.path, None, error=status_name(answers[name]))
        descriptor = _answer_buffer(answers["security"])
        listing = answers["listing"]
        if isinstance(listing, NoMoreFiles):
            names: list[tuple[str, int]] = []
        elif isinstance(listing, SMBResponseException):
            return RemoteFolder(sent.path, descriptor, error=status_name(listing))
        elif len(_answer_buffer(listing)) > _LISTING_BYTES - _LONGEST_ENTRY:
            names = self._full_listing(sent.path)  # the next entry might not have fitted: list it all on its own
        else:
            names = _entries(listing)
        return RemoteFolder(sent.path, descriptor, _subfolders(sent.path, names))

    def _full_listing(self, path: str) -> list[tuple[str, int]]:
        tree = self.tree
        folder = Open(tree, smb_name(path))
        folder.create(
            ImpersonationLevel.Impersonation,
            DirectoryAccessMask.FILE_LIST_DIRECTORY | DirectoryAccessMask.SYNCHRONIZE,
            FileAttributes.FILE_ATTRIBUTE_DIRECTORY,
            ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE,
            CreateDisposition.FILE_OPEN,
            CreateOptions.FILE_DIRECTORY_FILE,
        )
        names: list[tuple[str, int]] = []
        try:
            while True:
                try:
                    entries = folder.query_directory(
                        "*", FileInformationClass.FILE_DIRECTORY_INFORMATION, max_output=_LISTING_BYTES
                    )
                except NoMoreFiles:
                    return names
                names += [
                    (e["file_name"].get_value().decode("utf-16-le"), int(e["file_attributes"].get_value()))
                    for e in entries
                ]
        finally:
            folder.close()


def smb_name(path: str) -> str:
    return path.strip("/").replace("/", "\\")


def _query_security(file_id: bytes = _RELATED) -> SMB2QueryInfoRequest:
    query = SMB2QueryInfoRequest()
    query["info_type"] = InfoType.SMB2_0_INFO_SECURITY
    query["output_buffer_length"] = _DESCRIPTOR_BYTES
    query["additional_information"] = _SECURITY
    query["file_id"] = file_id
    return query


def _query_directory(file_id: bytes = _RELATED, *, restart: bool = False) -> SMB2QueryDirectoryRequest:
    query = SMB2QueryDirectoryRequest()
    query["file_information_class"] = FileInformationClass.FILE_DIRECTORY_INFORMATION
    query["flags"] = QueryDirectoryFlags.SMB2_RESTART_SCANS if restart else 0
    query["file_id"] = file_id
    query["output_buffer_length"] = _LISTING_BYTES
    query["buffer"] = "*".encode("utf-16-le")
    return query


def _close() -> SMB2CloseRequest:
    close = SMB2CloseRequest()
    close["file_id"] = _RELATED
    return close


def _answer_buffer(answer: object) -> bytes:
    """The buffer of a QUERY_INFO or QUERY_DIRECTORY answer (both: size, offset from the header, length; the
    header is 64 bytes), sliced directly rather than through smbprotocol's structures."""
    data = answer["data"].get_value()  # type: ignore[index]
    offset, length = struct.unpack_from("<HI", data, 2)
    start = offset - _HEADER_BYTES
    return bytes(data[start : start + length])


def _entries(answer: object) -> list[tuple[str, int]]:
    """(name, attributes) of each FILE_DIRECTORY_INFORMATION entry (MS-FSCC 2.4.10): next-entry offset at 0,
    attributes at 56, name length at 60, the UTF-16 name at 64."""
    buffer = _answer_buffer(answer)
    entries, position = [], 0
    while position + 64 <= len(buffer):
        following, attributes, size = (
            *struct.unpack_from("<I", buffer, position),
            *struct.unpack_from("<II", buffer, position + 56),
        )
        entries.append((buffer[position + 64 : position + 64 + size].decode("utf-16-le"), attributes))
        if not following:
            break
        position += following
    return entries


def _subfolders(path: str, names: Sequence[tuple[str, int]]) -> tuple[str, ...]:
    """Directories that are not reparse points (junctions and symlinks are not followed), ``.``/``..`` skipped."""
    folders = []
    for name, attributes in names:
        if name in (".", "..") or not attributes & FileAttributes.FILE_ATTRIBUTE_DIRECTORY:
            continue
        if attributes & FileAttributes.FILE_ATTRIBUTE_REPARSE_POINT:
            continue
        folders.append(f"{path}/{name}" if path else name)
    return tuple(sorted(folders))


def status_name(error: SMBResponseException) -> str:
    status = error.status
    for name, value in vars(NtStatus).items():
        if name.startswith("STATUS_") and value == status:
            return name
    return f"NTSTATUS 0x{status:08x}"


# -- Kerberos (auth = "kerberos"): pyspnego asks the KDC through the optional gssapi and krb5 packages, whose errors
# are neither smbprotocol's nor OSError; each is told as one line (never the password: their messages hold none)


def _kerberos_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [SpnegoError, ImportError]
    with contextlib.suppress(ImportError):
        from krb5 import Krb5Error

        errors.append(Krb5Error)
    with contextlib.suppress(ImportError):
        from gssapi.exceptions import GSSError

        errors.append(GSSError)
    return tuple(errors)


KERBEROS_ERRORS = _kerberos_errors()


def kerberos_reason(error: BaseException) -> str:
    """One line saying why Kerberos failed: the KDC's or the library's own words, or what to install."""
    if isinstance(error, ImportError):
        return "Kerberos needs the Python packages gssapi and krb5 (pip install 'permwatch[kerberos]')"
    text = " ".join(str(error).split()) or type(error).__name__
    return f"Kerberos: {text[:300]}"
