"""One SMB2 connection's socket after smbprotocol has set it up: message ids, credits, signing, one reader thread.

smbprotocol negotiates, authenticates and connects the tree; then `Channel` takes the socket over (`take_over`)
and sends the collector's few requests as bytes from `wire.py`, signed (or encrypted) with the session's keys
through smbprotocol's own signing and encryption functions. A thread of its own reads the socket in large
chunks, checks each answer's signature, adds its credits to the window and completes the request it answers;
an interim STATUS_PENDING (a change notification waiting for a change) keeps the request open. A request can
carry a callback, called on the reader thread when its final answer (or the connection's end) arrives, which is
how `notify.py` serves thousands of watches from one queue.

Why: smbprotocol parses every answer into its structure classes and re-packs each header to check its signature,
in a worker thread that competes with the caller for the GIL; that, not the network, bounded a remote walk.
A lost connection completes every open request with ``answer = None``; `wait` then raises `SmbError`. Idle for
`KEEPALIVE_SECONDS`, the reader sends an ECHO (Windows drops a connection idle for ~16 minutes).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from smbprotocol.connection import SMB2TransformHeader
from smbprotocol.transport import Tcp

from collectors.smb import wire

KEEPALIVE_SECONDS = 300.0
_CHUNK = 262_144


class ChannelError(RuntimeError):
    """The connection ended (the server went away, the socket was closed) or an answer did not arrive in time."""


class Pending:
    """A request sent and not yet answered; ``answer`` is set (or the connection lost: ``done`` with no answer)."""

    __slots__ = ("answer", "async_id", "callback", "done", "message_id")

    def __init__(self, message_id: int, callback: Callable[[Pending], None] | None) -> None:
        self.message_id = message_id
        self.async_id = 0  # set by the server's interim answer (STATUS_PENDING): the request went async
        self.answer: wire.Answer | None = None
        self.done = False
        self.callback = callback


class _Handover:
    """Stands in for smbprotocol's transport while it hands the socket over: its worker thread, reading the
    answer to the last request it sent (an ECHO asking for credits), then reads "closed" here and ends."""

    def __init__(self, real: Tcp) -> None:
        self.real = real

    @property
    def connected(self) -> bool:
        return bool(self.real.connected)

    def recv(self, timeout: float) -> bytes:
        return b""

    def send(self, data: bytes) -> None:
        self.real.send(data)

    def close(self) -> None:
        self.real.close()


class Channel:
    """Requests and answers on a socket taken over from an smbprotocol connection (see `take_over`)."""

    def __init__(self, connection: Any, session: Any, tree: Any, *, credits: int, timeout: float) -> None:
        self._transport: Tcp = connection.transport
        self._socket: socket.socket = self._transport._sock
        self._connection = connection
        self._session = session
        self.session_id: int = session.session_id
        self.tree_id: int = tree.tree_connect_id
        self._sign = bool(session.signing_required and session.signing_key)
        self._encrypt = bool(session.encrypt_data or tree.encrypt_data)
        self._flags = wire.DFS_OPERATIONS if tree.is_dfs_share else 0
        self._multi_credit = bool(connection.supports_multi_credit)
        self._target = credits
        self._timeout = timeout
        self._low: int = connection.sequence_window["low"]
        self._high: int = connection.sequence_window["high"]
        self._pending: dict[int, Pending] = {}
        self._lock = threading.Condition()
        self._send_lock = threading.Lock()
        self.lost: str | None = None
        self._closing = False
        self._socket.settimeout(KEEPALIVE_SECONDS)
        # small requests go out at once: with Nagle's algorithm a watch's CHANGE_NOTIFY, sent right after the
        # compound that opened its folder, waited for the server's ACK (measured: 11 ms a batch of 4 folders)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = threading.Thread(target=self._read, name=f"smb-channel-{connection.server_name}", daemon=True)
        self._reader.start()

    @classmethod
    def take_over(cls, connection: Any, session: Any, tree: Any, *, credits: int, timeout: float) -> Channel:
        """End smbprotocol's worker thread after one last ECHO (which asks the server for ``credits``) and own
        the socket from then on."""
        connection.transport = _Handover(connection.transport)
        connection.echo(sid=session.session_id, credit_request=max(1, credits), timeout=int(timeout))
        worker = connection._t_worker
        if worker is not None:
            worker.join(timeout)
            if worker.is_alive():
                raise ChannelError("smbprotocol's reader did not hand the connection over")
        connection.transport = connection.transport.real
        return cls(connection, session, tree, credits=credits, timeout=timeout)

    # -- sending -------------------------------------------------------------------------------------------------

    def submit(
        self,
        messages: Sequence[tuple[int, bytes]],
        *,
        related: bool = False,
        callback: Callable[[Pending], None] | None = None,
        callbacks: Sequence[Callable[[Pending], None] | None] | None = None,
        credit_wait: float = 30.0,
    ) -> list[Pending]:
        """Send ``(command, body)`` messages as one compound (related: each acts on the first one's file); each
        request's `Pending`, in order. ``callback`` is called for each request's final answer, or ``callbacks``
        names one (or None) per request. Waits (up to the timeout) while the server has granted too few credits."""
        charge = 1 if self._multi_credit else 0
        count = len(messages)
        with self._send_lock:
            with self._lock:
                if not self._lock.wait_for(
                    lambda: self.lost is not None or self._high - self._low >= count, credit_wait
                ):
                    raise ChannelError(f"the server granted no credits for {count} requests in {credit_wait:.0f} s")
                if self.lost is not None:
                    raise ChannelError(self.lost)
                first = self._low
                self._low += count
                more = 8 if self._high - self._low < self._target else 0  # grow the window toward the target
                each = callbacks if callbacks is not None else [callback] * count
                pendings = [Pending(first + i, each[i]) for i in range(count)]
                for pending in pendings:
                    self._pending[pending.message_id] = pending
            parts = []
            for i, (command, body) in enumerate(messages):
                last = i == count - 1
                padding = b"" if last else b"\x00" * (-(wire.HEADER_BYTES + len(body)) % 8)
                parts.append(
                    self._message(
                        command,
                        first + i,
                        body + padding,
                        flags=wire.RELATED_OPERATIONS if related and i else 0,
                        credit_charge=charge,
                        credit_request=max(charge, 1) + (more if not i else 0),
                        next_command=0 if last else wire.HEADER_BYTES + len(body) + len(padding),
                    )
                )
            self._send_frames([b"".join(parts)])
        return pendings

    def cancel(self, pendings: Sequence[Pending]) -> None:
        """Ask the server to end each request still open (one send): it answers each with STATUS_CANCELLED
        through the request's own `Pending` (or with its result, when that came first). A CANCEL takes no message
        id and no credit and has no answer of its own (MS-SMB2 3.2.4.24); it names the request by its async id
        once the server's interim answer gave one, by its message id before."""
        with self._send_lock:
            if self.lost is not None:
                raise ChannelError(self.lost)
            frames = [
                self._message(wire.CANCEL, p.message_id, wire.cancel(), credit_charge=0, credit_request=0,
                              async_id=p.async_id)
                for p in pendings
                if not p.done
            ]  # fmt: skip
            if frames:
                self._send_frames(frames)

    def _message(
        self,
        command: int,
        message_id: int,
        body: bytes,
        *,
        flags: int = 0,
        credit_charge: int,
        credit_request: int,
        next_command: int = 0,
        async_id: int = 0,
    ) -> bytes:
        """One request, header and body, signed when the session signs and does not encrypt."""
        flags |= self._flags
        if self._sign and not self._encrypt:
            flags |= wire.SIGNED
        message = (
            wire.header(
                command,
                message_id,
                session_id=self.session_id,
                tree_id=self.tree_id,
                credit_charge=credit_charge,
                credit_request=credit_request,
                flags=flags,
                next_command=next_command,
                async_id=async_id,
            )
            + body
        )
        if flags & wire.SIGNED:
            signature = self._connection._generate_signature(
                message, self._session.signing_key, message_id, False, command
            )
            message = message[:48] + signature + message[64:]
        return message

    def _send_frames(self, frames: Sequence[bytes]) -> None:
        """Each frame (a message or a compound) as one Direct TCP packet, encrypted when the session encrypts, all
        in one write; the caller holds the send lock."""
        data = bytearray()
        for frame in frames:
            if self._encrypt:
                frame = self._connection._encrypt(frame, self._session).pack()
            data += struct.pack(">I", len(frame)) + frame
        try:
            self._socket.sendall(data)
        except OSError as exc:
            self._end(f"the connection to the server was lost: {exc}")
            raise ChannelError(self.lost or "the connection was lost") from None

    def wait(self, pending: Pending, timeout: float | None = None) -> wire.Answer:
        """The request's final answer (any status); `ChannelError` when the connection ended or none came in time."""
        if pending.answer is not None:
            return pending.answer
        limit = self._timeout if timeout is None else timeout
        with self._lock:
            if not self._lock.wait_for(lambda: pending.done, limit):
                raise ChannelError(f"no answer from the server in {limit:.0f} s")
        if pending.answer is None:
            raise ChannelError(self.lost or "the connection was lost")
        return pending.answer

    @property
    def alive(self) -> bool:
        return self.lost is None

    def close(self) -> None:
        """Close the socket (the server then closes the session's handles) and end the reader."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._socket.close()
        self._transport.connected = False
        if self._reader is not threading.current_thread():
            self._reader.join(10)
        self._end("the connection was closed")

    # -- the reader thread -----------------------------------------------------------------------------------------

    def _read(self) -> None:
        buffer = bytearray()
        try:
            while True:
                try:
                    chunk = self._socket.recv(_CHUNK)
                except TimeoutError:
                    with contextlib.suppress(ChannelError):  # no credit: the server has requests to answer anyway
                        self.submit([(wire.ECHO, wire.echo())], credit_wait=0)  # its answer is counted and dropped
                    continue
                if not chunk:
                    break
                buffer += chunk
                completed = []
                while len(buffer) >= 4:
                    size = int.from_bytes(buffer[1:4], "big")  # Direct TCP: a zero byte, then a 24-bit length
                    if len(buffer) < 4 + size:
                        break
                    packet = bytes(buffer[4 : 4 + size])
                    del buffer[: 4 + size]
                    completed += self._dispatch(packet)
                if completed:
                    with self._lock:
                        for pending in completed:
                            pending.done = True
                        self._lock.notify_all()
                    for pending in completed:
                        if pending.callback is not None:
                            pending.callback(pending)
        except (OSError, ValueError, ChannelError, struct.error) as exc:
            self._end(f"the connection to the server failed: {type(exc).__name__}: {exc}")
            return
        self._end("the server closed the connection" if not self._closing else "the connection was closed")

    def _dispatch(self, packet: bytes) -> list[Pending]:
        encrypted = packet[:4] == b"\xfdSMB"
        if encrypted:
            transform = SMB2TransformHeader()
            transform.unpack(packet)
            packet = self._connection._decrypt(transform)
        completed = []
        granted = 0
        for answer, signed in wire.split(packet):
            if not encrypted and answer.flags & wire.SIGNED and answer.status != wire.STATUS_PENDING:
                expected = self._connection._generate_signature(
                    signed, self._session.signing_key, answer.message_id, True, answer.command
                )
                if expected != signed[48:64]:
                    raise ChannelError(f"the signature of the answer to message {answer.message_id} is wrong")
            granted += answer.credit_response or (0 if self._multi_credit else 1)
            if answer.message_id == wire.ASYNC_NOTIFICATION:
                continue  # an oplock break: no oplock is ever asked for, nothing to do
            if answer.status == wire.STATUS_PENDING and answer.flags & wire.ASYNC_COMMAND:
                waiting = self._pending.get(answer.message_id)
                if waiting is not None:  # interim: the final answer follows (a change notification waits for one)
                    waiting.async_id = answer.async_id
                continue
            pending = self._pending.pop(answer.message_id, None)
            if pending is not None:
                pending.answer = answer
                completed.append(pending)
        if granted:
            with self._lock:
                self._high += granted
                self._lock.notify_all()
        return completed

    def _end(self, reason: str) -> None:
        with self._lock:
            if self.lost is None:
                self.lost = reason
            orphans = list(self._pending.values())
            self._pending.clear()
            for pending in orphans:
                pending.done = True
            self._lock.notify_all()
        for pending in orphans:
            if pending.callback is not None:
                pending.callback(pending)
