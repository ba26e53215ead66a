"""One authenticated SMB2/3 connection to one share, and a folder read in one compounded request.

smbprotocol negotiates, authenticates and connects the tree; then a `Channel` takes the socket over and the
requests are the bytes of `wire.py` (smbprotocol's structure classes, not the network, bounded a walk: profiled
0.67 ms of client CPU per folder through them). One *related compound* per folder (MS-SMB2 3.2.4.1.4) — CREATE
the directory, QUERY_INFO its descriptor (owner, group, DACL; smbprotocol's high-level client never sets
``additional_information``), QUERY_DIRECTORY, CLOSE — costs one round trip. When the listing's answer is so
full that one more entry might not have fitted, the folder is listed again on a handle of its own
(`_full_listing`).

`send_folders` only sends; `receive_folder` collects the answers, so a caller can keep several folders in flight
(see `tree.py`). `open_folders` and `send_reads` serve handles kept open (the change notifications' handles:
`notify.py`), read without a CREATE and CLOSE each time. Each request in flight costs one credit: `connect` asks
the server for `credits` of them with an ECHO, as Windows clients do, instead of growing one at a time.
`open_session` sets up a session and tells in one line why it could not (NTLM or Kerberos); the reader of the
share's own ACL (`srvsvc.py`) uses it too.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from smbprotocol.connection import Connection
from smbprotocol.exceptions import SMBException, SMBResponseException
from smbprotocol.file_info import FileAttributes
from smbprotocol.header import NtStatus
from smbprotocol.open import DirectoryAccessMask
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect
from spnego.exceptions import SpnegoError

from collectors.smb import wire
from collectors.smb.channel import Channel, ChannelError, Pending

# SECURITY_INFORMATION bits for QUERY_INFO (MS-DTYP 2.4.7): owner, group and DACL; no SACL (needs a privilege)
OWNER_SECURITY_INFORMATION = 0x1
GROUP_SECURITY_INFORMATION = 0x2
DACL_SECURITY_INFORMATION = 0x4
_SECURITY = OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION
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
    """A folder's read sent and not yet received: the channel's requests, in the order sent.

    ``opened`` and ``closed`` are the CREATE and CLOSE of a read with a handle of its own (`send_folders`);
    a read on a handle kept open (`send_reads`) has neither. ``error`` is set for a folder that failed before its
    read was sent (it could not be opened)."""

    path: str
    security: Pending | None = None
    listing: Pending | None = None
    opened: Pending | None = None
    closed: Pending | None = None
    error: str | None = None


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
        self._channel: Channel | None = None
        # the same for every folder of a related compound: built once
        self._related = (
            (wire.QUERY_INFO, wire.query_security(wire.RELATED_FILE, _SECURITY, _DESCRIPTOR_BYTES)),
            (wire.QUERY_DIRECTORY, wire.query_directory(wire.RELATED_FILE, _LISTING_BYTES)),
            (wire.CLOSE, wire.close(wire.RELATED_FILE)),
        )

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
        """Negotiate, authenticate, connect the tree, ask for credits and take the socket over; `SmbError` says
        what failed."""
        with open_session(
            self.server,
            self._username,
            self._password,
            port=self.port,
            encrypt=self._encrypt,
            auth=self._auth,
            timeout=self._timeout,
            unc=self.unc,
        ) as (connection, session, tree):
            self._channel = Channel.take_over(connection, session, tree, credits=self.credits, timeout=self._timeout)

    def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()  # the server closes the session's handles with the connection

    @property
    def connected(self) -> bool:
        return self._channel is not None and self._channel.alive

    @property
    def channel(self) -> Channel:
        if self._channel is None:
            raise SmbError(f"{self.unc} is not connected")
        return self._channel

    def wait(self, pending: Pending, timeout: float | None = None) -> wire.Answer:
        """A request's final answer; `SmbError` when the connection ended or none came within ``timeout`` s."""
        try:
            return self.channel.wait(pending, timeout=timeout)
        except ChannelError as exc:
            raise SmbError(f"{self.unc}: {exc}") from None

    def cancel(self, pendings: Sequence[Pending]) -> None:
        """Ask the server to end each request still open (`Channel.cancel`); `SmbError` when the connection ended."""
        try:
            self.channel.cancel(pendings)
        except ChannelError as exc:
            raise SmbError(f"{self.unc}: {exc}") from None

    def _submit(
        self,
        messages: Sequence[tuple[int, bytes]],
        *,
        related: bool = False,
        callbacks: Sequence[Callable[[Pending], None] | None] | None = None,
    ) -> list[Pending]:
        try:
            return self.channel.submit(messages, related=related, callbacks=callbacks)
        except ChannelError as exc:
            raise SmbError(f"{self.unc}: {exc}") from None

    # -- handles kept open ---------------------------------------------------------------------------------------

    def open_folders(self, paths: Sequence[str], access: int) -> list[bytes | str]:
        """Open each folder with ``access`` in one unrelated compound (one send, one round trip for the lot): its
        file id, or the NTSTATUS name the server answered. The caller closes what it opened (`close_handle`)."""
        if not paths:
            return []
        sent = self._submit([(wire.CREATE, wire.create(smb_name(path), access)) for path in paths])
        opened: list[bytes | str] = []
        for pending in sent:
            answer = self.wait(pending)
            opened.append(answer.file_id if answer.status == wire.STATUS_SUCCESS else status_name(answer.status))
        return opened

    def close_handle(self, file_id: bytes) -> None:
        """Close a handle (an error answer means it is closed already: the folder went away)."""
        self.wait(self._submit([(wire.CLOSE, wire.close(file_id))])[0])

    # -- one folder ------------------------------------------------------------

    def read_folder(self, path: str) -> RemoteFolder:
        """The folder's descriptor and subfolders (one round trip, two when it has very many entries)."""
        return self.receive_folder(self.send_folders([path])[0])

    def send_folders(self, paths: Sequence[str]) -> list[InFlight]:
        """Each folder's read as a related compound of its own (CREATE, QUERY_INFO, QUERY_DIRECTORY, CLOSE)."""
        sent = []
        for path in paths:
            opened, security, listing, closed = self._submit(
                [(wire.CREATE, wire.create(smb_name(path), READ_ACCESS)), *self._related], related=True
            )
            sent.append(InFlight(path, security, listing, opened, closed))
        return sent

    def send_watched(self, path: str, notify: bytes, callback: Callable[[Pending], None]) -> tuple[InFlight, Pending]:
        """Open a folder, send ``notify`` (a CHANGE_NOTIFY of the related handle) and read it, in one related
        compound (CREATE, CHANGE_NOTIFY, QUERY_INFO, QUERY_DIRECTORY): the read and the watch's request, whose
        final answer goes to ``callback``. The handle stays open (its id is the CREATE's answer: ``opened``).

        The server handles the watch before the read, so a change after it is collected on the handle. A
        CHANGE_NOTIFY that must wait is not the last of the compound: Samba cancels it then (STATUS_CANCELLED;
        MS-SMB2 3.3.5.2.7, note 206) and goes on with the read, the handle still collecting changes until the
        next CHANGE_NOTIFY on it; a server that lets it wait answers it when something changes."""
        opened, watch, security, listing = self._submit(
            [(wire.CREATE, wire.create(smb_name(path), READ_ACCESS)), (wire.CHANGE_NOTIFY, notify), *self._related[:2]],
            related=True,
            callbacks=(None, callback, None, None),
        )
        return InFlight(path, security, listing, opened), watch

    def send_reads(self, handles: Sequence[tuple[str, bytes]]) -> list[InFlight]:
        """Read folders through handles already open (path, file id): QUERY_INFO and QUERY_DIRECTORY (from the
        start) of them all in one unrelated compound, one send."""
        messages: list[tuple[int, bytes]] = []
        for _, file_id in handles:
            messages += [
                (wire.QUERY_INFO, wire.query_security(file_id, _SECURITY, _DESCRIPTOR_BYTES)),
                (wire.QUERY_DIRECTORY, wire.query_directory(file_id, _LISTING_BYTES, restart=True)),
            ]
        if not messages:
            return []
        sent = self._submit(messages)
        return [InFlight(path, sent[2 * i], sent[2 * i + 1]) for i, (path, _) in enumerate(handles)]

    def receive_folder(self, sent: InFlight) -> RemoteFolder:
        """Every answer is waited for (even after a failure: the next read must not find them in its way)."""
        if sent.error is not None:
            return RemoteFolder(sent.path, None, error=sent.error)
        answers = {}
        for name in ("opened", "security", "listing", "closed"):
            pending = getattr(sent, name)
            if pending is not None:
                answers[name] = self.wait(pending)
        for name in ("opened", "security"):
            if name in answers and answers[name].status != wire.STATUS_SUCCESS:
                return RemoteFolder(sent.path, None, error=status_name(answers[name].status))
        descriptor = answers["security"].buffer
        listing = answers["listing"]
        if listing.status == wire.STATUS_NO_MORE_FILES:
            names: list[tuple[str, int]] = []
        elif listing.status != wire.STATUS_SUCCESS:
            return RemoteFolder(sent.path, descriptor, error=status_name(listing.status))
        else:
            buffer = listing.buffer
            if len(buffer) > _LISTING_BYTES - _LONGEST_ENTRY:
                names = self._full_listing(sent.path)  # the next entry might not have fitted: list it all on its own
            else:
                names = wire.entries(buffer)
        return RemoteFolder(sent.path, descriptor, _subfolders(sent.path, names))

    def _full_listing(self, path: str) -> list[tuple[str, int]]:
        """Every entry of a folder, on a handle of its own, one QUERY_DIRECTORY after another until none is left."""
        access = DirectoryAccessMask.FILE_LIST_DIRECTORY | DirectoryAccessMask.SYNCHRONIZE
        opened = self.wait(self._submit([(wire.CREATE, wire.create(smb_name(path), access))])[0])
        if opened.status != wire.STATUS_SUCCESS:
            raise SmbError(f"{self.unc}: cannot list {path!r}: {status_name(opened.status)}")
        names: list[tuple[str, int]] = []
        try:
            while True:
                answer = self.wait(
                    self._submit([(wire.QUERY_DIRECTORY, wire.query_directory(opened.file_id, _LISTING_BYTES))])[0]
                )
                if answer.status == wire.STATUS_NO_MORE_FILES:
                    return names
                if answer.status != wire.STATUS_SUCCESS:
                    raise SmbError(f"{self.unc}: cannot list {path!r}: {status_name(answer.status)}")
                names += wire.entries(answer.buffer)
        finally:
            if self._channel is not None and self._channel.alive:
                self.close_handle(opened.file_id)


@contextlib.contextmanager
def open_session(
    server: str,
    username: str,
    password: str,
    *,
    port: int = 445,
    encrypt: bool = False,
    auth: str = "negotiate",
    timeout: float = 30.0,
    unc: str,
) -> Iterator[tuple[Connection, Session, TreeConnect]]:
    """An authenticated SMB session (NTLM or Kerberos, signed; encrypted when asked) with its tree ``unc``
    connected, for the block. Whatever fails, reaching the server, authenticating or in the block (an
    smbprotocol or socket error, a Kerberos library's), disconnects and raises `SmbError` with one line naming
    ``unc`` and ``username`` and why (an NTSTATUS name, the Kerberos library's words, what to install), never the
    password. On success the connection stays open: the block's caller owns it."""
    connection = Connection(uuid.uuid4(), server, port, require_signing=True)
    try:
        connection.connect(timeout=timeout)
    except (OSError, SMBException, ValueError) as exc:
        raise SmbError(f"cannot reach {server}:{port} over SMB: {one_line(exc)}") from None
    try:
        session = Session(connection, username, password, require_encryption=encrypt, auth_protocol=auth)
        session.connect()
        tree = TreeConnect(session, unc)
        tree.connect()
        yield connection, session, tree
    except (SMBException, OSError, ValueError, ChannelError) as exc:
        connection.disconnect(True)
        reason = status_name(exc.status) if isinstance(exc, SMBResponseException) else type(exc).__name__
        raise SmbError(f"cannot open {unc} as {username}: {reason}") from None
    except KERBEROS_ERRORS as exc:
        connection.disconnect(True)
        raise SmbError(f"cannot open {unc} as {username}: {kerberos_reason(exc)}") from None
    except BaseException:
        connection.disconnect(True)
        raise


def one_line(error: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


def smb_name(path: str) -> str:
    return path.strip("/").replace("/", "\\")


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


def status_name(status: int) -> str:
    """``STATUS_ACCESS_DENIED`` for 0xC0000022; the hex for a status smbprotocol does not name."""
    name = _STATUS_NAMES.get(status)
    return name if name is not None else f"NTSTATUS 0x{status:08x}"


_STATUS_NAMES = {
    value: name
    for name, value in reversed(vars(NtStatus).items())
    if name.startswith("STATUS_") and isinstance(value, int)
}


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
