"""Samba's share-level doors (issue 16, item 6): each share's ``valid users``, ``invalid users`` and share ACL,
published as ``smb.share`` events at start and whenever they change.

smbd admits a user to a share before any file's ACL is asked: ``valid users`` (when set) must name them,
``invalid users`` must not, and the share security descriptor (kept in ``share_info.tdb`` in Samba's state
directory, edited with ``sharesec`` or from Windows' share properties) must grant them read. This module reads the
effective configuration as Samba itself parses it (``testparm -s``) and the descriptors with ``sharesec
--view-all``, for the shares whose path is at, under or above one of the collector's roots. It polls the
modification times of ``smb.conf`` (and the files it includes) and ``share_info.tdb`` (``poll_seconds``, 2 s)
and publishes only the shares that changed, and a ``deleted`` one for a share that went (or whose path moved: the
old path is told). What it
published is kept in a small JSON file, so a restart publishes what changed while it was down. ``sharesec``
needs to read ``share_info.tdb`` (mode 0600, root's, on Debian).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from collectors.spool import RecordDropped
from permwatch.events import Event, NtAce, NtAceFlag, SambaShare

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
SHARE_RIGHTS = {"FULL": 0x001F01FF, "CHANGE": 0x001301BF, "READ": 0x001200A9}
"""The names ``sharesec`` prints for the share rights Windows' share properties offer."""
_FLAG_NAMES = {
    "OI": NtAceFlag.OBJECT_INHERIT,
    "CI": NtAceFlag.CONTAINER_INHERIT,
    "NP": NtAceFlag.NO_PROPAGATE_INHERIT,
    "IO": NtAceFlag.INHERIT_ONLY,
    "I": NtAceFlag.INHERITED,
}
_FLAG_BITS = {0x01: "OI", 0x02: "CI", 0x04: "NP", 0x08: "IO", 0x10: "I"}
_LIST_ENTRY = re.compile(r'"([^"]*)"|([^\s,]+)')
_ACE_LINE = re.compile(r"ACL:(S-1-[0-9A-Fa-fx-]+):([A-Z_]+)/([^/]+)/(\S+)")


class ShareReadError(RuntimeError):
    """``testparm`` or ``sharesec`` failed, or printed what this module does not understand."""


@dataclass(frozen=True, slots=True)
class ShareConfig:
    """One share section of the effective smb.conf, as far as admission goes."""

    name: str
    path: str
    valid_users: tuple[str, ...] = ()
    invalid_users: tuple[str, ...] = ()


def user_list(value: str) -> tuple[str, ...]:
    """An smb.conf user list (``anna, @ledning "+alla staff"``): entries split at commas and blanks, quotes kept
    together (a backslash stays: ``KOMMUN\\anna``)."""
    return tuple(quoted or bare for quoted, bare in _LIST_ENTRY.findall(value) if quoted or bare)


def parse_testparm(text: str) -> dict[str, ShareConfig]:
    """The shares (sections with a ``path``) of ``testparm -s`` output, by name; ``[global]`` and path-less
    sections (``[homes]``, printers without a path) are left out."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1]
            current = None if name.lower() == "global" else sections.setdefault(name, {})
        elif current is not None and "=" in line:
            key, value = line.split("=", 1)
            current[key.strip().lower()] = value.strip()
    return {
        name: ShareConfig(
            name,
            os.path.normpath(fields["path"]),
            user_list(fields.get("valid users", "")),
            user_list(fields.get("invalid users", "")),
        )
        for name, fields in sections.items()
        if fields.get("path", "").startswith("/")
    }


def parse_sharesec(text: str) -> dict[str, tuple[NtAce, ...]]:
    """Each share's ACL, in order, from ``sharesec --view-all``: ``[name]``, then ``ACL:<SID>:<ALLOWED|DENIED>/
    <flags>/<FULL|CHANGE|READ|0xMASK>`` lines (flags ``0x0`` or ``OI|CI``). ACE kinds other than allowed and
    denied grant or deny nothing and are left out, as Windows' check ignores them."""
    found: dict[str, list[NtAce]] = {}
    current: list[NtAce] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = found.setdefault(line[1:-1], [])
        elif line.startswith("ACL:"):
            match = _ACE_LINE.fullmatch(line)
            if match is None or current is None:
                raise ShareReadError(f"sharesec printed an ACE line this reader does not understand: {line[:120]!r}")
            sid, kind, flags, mask = match.groups()
            if kind not in ("ALLOWED", "DENIED"):
                continue
            current.append(
                NtAce(type="allow" if kind == "ALLOWED" else "deny", flags=_flags(flags), mask=_mask(mask), trustee=sid)
            )
    return {name: tuple(aces) for name, aces in found.items()}


def _flags(text: str) -> tuple[NtAceFlag, ...]:
    if text.lower().startswith("0x"):
        bits = int(text, 16)
        names = [name for bit, name in _FLAG_BITS.items() if bits & bit]
    else:
        names = [part for part in text.split("|") if part]
    unknown = [name for name in names if name not in _FLAG_NAMES]
    if unknown:
        raise ShareReadError(f"sharesec printed an unknown ACE flag {unknown[0]!r}")
    return tuple(_FLAG_NAMES[name] for name in names)


def _mask(text: str) -> int:
    if text in SHARE_RIGHTS:
        return SHARE_RIGHTS[text]
    try:
        return int(text, 16)
    except ValueError:
        raise ShareReadError(f"sharesec printed an unknown access mask {text!r}") from None


def covers(roots: Iterable[str], path: str) -> bool:
    """Whether a share of ``path`` serves some of a root: the root itself, a folder in it, or one above it."""
    return any(
        path == root or path.startswith(root.rstrip("/") + "/") or root.startswith(path.rstrip("/") + "/")
        for root in roots
    )


Run = Callable[[Sequence[str]], str]


def run_tool(command: Sequence[str]) -> str:
    """``command``'s standard output; :class:`ShareReadError` with the end of its errors when it fails."""
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ShareReadError(f"{command[0]}: {exc}") from None
    if result.returncode != 0:
        tail = " ".join(result.stderr.strip().splitlines()[-2:])[:200]
        raise ShareReadError(f"{' '.join(command[:2])} exited with {result.returncode}: {tail}")
    return result.stdout


class SambaShareWatcher:
    """Publishes the ``smb.share`` events of the shares serving ``roots`` (see the module docstring)."""

    def __init__(
        self,
        smb_conf: Path,
        roots: Iterable[str | os.PathLike[str]],
        emit: Callable[[Event], None],
        flush: Callable[[], None],
        *,
        source: str,
        state_path: Path | None = None,
        poll_seconds: float = POLL_SECONDS,
        run: Run = run_tool,
    ) -> None:
        self._conf = str(smb_conf)
        self._roots = tuple(os.path.normpath(os.fspath(root)) for root in roots)
        self._emit, self._flush = emit, flush
        self._source = source
        self._state_path = state_path
        self._poll_seconds = poll_seconds
        self._run = run
        self._published: dict[str, dict[str, object]] = self._load()
        """share name → the fields last published of it (without ids and times)"""
        self._seen: tuple[object, ...] | None = None
        self._share_info_path: str | None = None

    def run(self, stop: threading.Event) -> None:
        """Publish the shares now, then again whenever smb.conf or share_info.tdb changes, until ``stop``."""
        while not stop.is_set():
            seen = self._fingerprint()
            if seen != self._seen:
                try:
                    self.publish_changes()
                    self._seen = seen
                except ShareReadError as exc:  # smbd keeps its last good config too; try again next round
                    log.warning("Samba shares of %s not read: %s", self._conf, exc)
                except RecordDropped:  # the spool was full: nothing was taken as published, so all goes again
                    log.warning("Samba shares of %s: the spool dropped their events; publishing again", self._conf)
            stop.wait(self._poll_seconds)

    def publish_changes(self) -> list[SambaShare]:
        """Read every share now and publish those that differ from what was published; return them."""
        shares = {
            name: share
            for name, share in parse_testparm(self._run(["testparm", "-s", self._conf])).items()
            if covers(self._roots, share.path)
        }
        acls: dict[str, tuple[NtAce, ...]] = {}
        error = None
        if shares:
            try:
                acls = {
                    name.lower(): aces
                    for name, aces in parse_sharesec(self._run(["sharesec", "-s", self._conf, "--view-all"])).items()
                }
            except ShareReadError as exc:
                error = str(exc)[:300]
                log.warning("share ACLs of %s not read: %s; those shares are judged without them", self._conf, exc)
        events = []
        for name, before in sorted(self._published.items()):
            share = shares.get(name)
            if share is None or share.path != before["path"]:
                events.append(SambaShare(name=name, path=str(before["path"]), deleted=True, source=self._source))
        for name, share in sorted(shares.items()):
            acl = acls.get(name.lower())
            event = SambaShare(
                name=name,
                path=share.path,
                valid_users=share.valid_users,
                invalid_users=share.invalid_users,
                acl=acl,
                error=None if acl is not None else error or "sharesec listed no ACL for this share",
                source=self._source,
            )
            if self._published.get(name) != _fields(event):
                events.append(event)
        for event in events:
            self._emit(event)
        if events:
            self._flush()
            for event in events:
                if event.deleted:
                    self._published.pop(event.name, None)
                else:
                    self._published[event.name] = _fields(event)
            self._save()
        return events

    def _fingerprint(self) -> tuple[object, ...]:
        """What says smb.conf or a share ACL may have changed: the modification times and sizes of smb.conf, the
        files it includes and share_info.tdb."""
        found: list[object] = []
        for path in (*included_files(self._conf), self._share_info()):
            try:
                st = os.stat(path) if path else None
            except OSError:
                st = None
            found.append(None if st is None else (st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(found)

    def _share_info(self) -> str | None:
        """``share_info.tdb`` in Samba's state directory (asked of testparm once, then kept)."""
        if self._share_info_path is None:
            try:
                state = self._run(["testparm", "-s", "--parameter-name=state directory", self._conf]).strip()
            except ShareReadError as exc:
                log.warning("Samba's state directory of %s not known: %s", self._conf, exc)
                return None
            self._share_info_path = os.path.join(state, "share_info.tdb")
        return self._share_info_path

    def _load(self) -> dict[str, dict[str, object]]:
        if self._state_path is None:
            return {}
        try:
            saved = json.loads(self._state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("%s not read (%s): every share is published again", self._state_path, exc)
            return {}
        return saved if isinstance(saved, dict) else {}

    def _save(self) -> None:
        if self._state_path is None:
            return
        temporary = self._state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._published, sort_keys=True), encoding="utf-8")
        os.replace(temporary, self._state_path)


_INCLUDE = re.compile(r"^\s*include\s*=\s*(/\S.*?)\s*$", re.IGNORECASE)


def included_files(conf: str, limit: int = 32) -> list[str]:
    """``conf`` and the files its ``include =`` lines name, theirs too (absolute paths without ``%`` macros; at
    most ``limit``): an edit to any of them can change a share."""
    found: list[str] = []
    pending = [conf]
    while pending and len(found) < limit:
        path = pending.pop(0)
        if path in found:
            continue
        found.append(path)
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        pending += [m.group(1) for line in text.splitlines() if (m := _INCLUDE.match(line)) and "%" not in m.group(1)]
    return found


def _fields(event: SambaShare) -> dict[str, object]:
    """What of a share event says what the share is (no id, time or source), as JSON would hold it."""
    dumped: dict[str, object] = event.model_dump(
        mode="json", include={"path", "valid_users", "invalid_users", "acl", "error"}
    )
    return dumped
