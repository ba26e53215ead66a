"""The NT-ACL reader: a path on a Samba share as SMB clients see it, the POSIX side and the Windows ACL together.

Samba (``vfs objects = acl_xattr``) keeps a file's Windows ACL in the ``security.NTACL`` xattr (the name is
configurable in Samba 4.18+ as ``acl_xattr:security_acl_name``, and here as the reader option ``xattr_name``)
and checks both it and the kernel's POSIX permissions, so this reader publishes both: the POSIX state exactly as
:mod:`collectors.fs.readers.posix` reads it, and an :class:`permwatch.events.NtAcl` decoded by
:mod:`collectors.ntacl`. Which descriptor Samba serves follows Samba's stale-blob rule
(:func:`collectors.ntacl.served_descriptor`): a stale blob (after a local ``setfacl``/``chmod``/``chown``) is
published as ``source="posix"``, since Samba then serves the ACL it maps from POSIX. A blob that does not decode
is logged once per read with the path and the reason, and published as ``source="unreadable"``: the processor
judges such a path by its POSIX side and says it could not read the NT ACL. The walk counts those reads in
``permwatch_fs_acl_unreadable_total`` (those of first-scan worker processes too, which report them back).
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from collectors.acl import DEFAULT_NAMES, NameCache
from collectors.fs.read import PathState
from collectors.fs.readers.posix import read_path_state
from collectors.ntacl import XATTR_NAME, AceFlags, NtAclError, PosixState, SecurityDescriptor, decode_ntacl, is_stale
from collectors.ntacl import NtAcl as DecodedNtAcl
from permwatch.events import NtAce, NtAceFlag, NtAcl, ObjectType

log = logging.getLogger(__name__)

FROM_POSIX = NtAcl(source="posix")
"""No blob, or one Samba no longer serves: the POSIX side alone decides (one object, for the fingerprint memo)."""
MAX_REMEMBERED = 4096
_FLAG_NAMES = {
    AceFlags.OBJECT_INHERIT: NtAceFlag.OBJECT_INHERIT,
    AceFlags.CONTAINER_INHERIT: NtAceFlag.CONTAINER_INHERIT,
    AceFlags.NO_PROPAGATE_INHERIT: NtAceFlag.NO_PROPAGATE_INHERIT,
    AceFlags.INHERIT_ONLY: NtAceFlag.INHERIT_ONLY,
    AceFlags.INHERITED: NtAceFlag.INHERITED,
}


class NtAclReader:
    """Reads paths as Samba serves them: mode bits, POSIX ACLs and the NT ACL in ``xattr_name``."""

    def __init__(self, names: NameCache = DEFAULT_NAMES, *, xattr_name: str = XATTR_NAME) -> None:
        if not xattr_name or "\0" in xattr_name or "." not in xattr_name:
            raise ValueError(f"xattr_name {xattr_name!r} is not an xattr name like security.NTACL")
        if xattr_name.startswith("trusted.") and not has_cap_sys_admin():
            # the kernel answers "no such attribute" instead of refusing: every path would look blob-less
            raise ValueError(f"xattr_name {xattr_name!r}: reading trusted.* xattrs needs CAP_SYS_ADMIN")
        self._names = names
        self._xattr = xattr_name
        self._stored: dict[bytes, NtAcl] = {}
        self._decoded: dict[bytes, DecodedNtAcl | str] = {}
        """blobs decoded before (a tree repeats few): the NtAcl, or why it does not decode"""

    def read(self, path: str) -> PathState | None:
        state = read_path_state(path, names=self._names)
        if state is None or state.object_type is ObjectType.SYMLINK:
            return state  # a symlink has no ACL of its own: SMB clients are served its target's
        try:
            blob = os.getxattr(path, self._xattr, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP):
                raise
            return state._replace(acl_kind="nt", nt_acl=FROM_POSIX)  # Samba maps one from POSIX
        return state._replace(acl_kind="nt", nt_acl=self._served(path, blob))

    def _decode(self, blob: bytes) -> DecodedNtAcl | str:
        """The decoded blob, or why it does not decode (kept as text: an exception would keep its frames)."""
        found = self._decoded.get(blob)
        if found is None:
            if len(self._decoded) >= MAX_REMEMBERED:
                self._decoded.clear()
            try:
                found = decode_ntacl(blob)
            except NtAclError as exc:
                found = str(exc)
            self._decoded[blob] = found
        return found

    def _served(self, path: str, blob: bytes) -> NtAcl:
        decoded = self._decode(blob)
        if isinstance(decoded, str):
            reason = f"{self._xattr} does not decode: {decoded}"
            log.warning("ACL unreadable: %s: %s; readers are judged by its POSIX permissions", path, reason)
            return NtAcl(source="unreadable", error=reason[:300])
        posix = _posix_state(path)
        if posix is None or is_stale(decoded, posix):
            return FROM_POSIX
        found = self._stored.get(blob)
        if found is None:
            if len(self._stored) >= MAX_REMEMBERED:
                self._stored.clear()
            found = self._stored[blob] = nt_acl_of(decoded.descriptor)
        return found


def nt_acl_of(descriptor: SecurityDescriptor) -> NtAcl:
    """The contract's form of a descriptor Samba serves. ACE kinds that grant or deny nothing (audit, alarm,
    unknown) are left out, as Windows' access check ignores them; object and callback ACEs are ``conditional``."""
    dacl: tuple[NtAce, ...] | None = None
    if descriptor.dacl is not None:
        dacl = tuple(
            NtAce(
                type="allow" if ace.allows else "deny",
                flags=tuple(name for bit, name in _FLAG_NAMES.items() if ace.flags & bit),
                mask=ace.access_mask,
                trustee=ace.trustee,
                conditional=not ace.basic,
            )
            for ace in descriptor.dacl
            if (ace.allows or ace.denies) and ace.trustee is not None
        )
    return NtAcl(
        source="stored",
        owner=descriptor.owner,
        group=descriptor.group,
        dacl_present=descriptor.dacl_present,
        dacl=dacl if descriptor.dacl_present else None,
    )


def has_cap_sys_admin() -> bool:
    """Whether this process holds CAP_SYS_ADMIN (bit 21 of CapEff in /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 21))
    except OSError:
        return False  # no /proc: assume the capability is missing, the safe side for trusted.*
    return False


def _posix_state(path: str) -> PosixState | None:
    """What Samba hashes of the path's POSIX side; None when it vanished meanwhile."""
    try:
        st = os.lstat(path)
        is_directory = stat.S_ISDIR(st.st_mode)
        return PosixState(
            access_acl=_xattr_or_none(path, "system.posix_acl_access"),
            default_acl=_xattr_or_none(path, "system.posix_acl_default") if is_directory else None,
            is_directory=is_directory,
            uid=st.st_uid,
            gid=st.st_gid,
            mode=st.st_mode,
        )
    except FileNotFoundError:
        return None


def _xattr_or_none(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise
