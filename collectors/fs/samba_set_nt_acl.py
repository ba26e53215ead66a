"""Set a path's Windows ACL the way smbd does, for the revert executor: run by Debian's own ``python3``.

Samba's Python bindings (Debian's ``python3-samba``) are bound to the system's
interpreter, not to permwatch's, so the revert executor runs this file with
``/usr/bin/python3`` as a separate process. It imports nothing of permwatch.
It stores the descriptor through Samba's VFS (``acl_xattr``): the
``security.NTACL`` blob with the hash of the POSIX ACL Samba maps from it, so
Samba serves exactly this descriptor afterwards (a blob written any other
way would be stale). The share is the one of ``smb.conf`` whose path holds
the target most closely.

    /usr/bin/python3 samba_set_nt_acl.py SMB_CONF PATH SDDL

Prints the descriptor Samba serves afterwards (SDDL); exits 2 with one line
on stderr when it cannot.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def share_of(s3conf: Any, path: str) -> str | None:
    """The smb.conf service whose path is the longest one holding ``path``."""
    best, best_len = None, -1
    for service in s3conf.services():
        root = s3conf.get("path", service)
        if not root:
            continue
        root = os.path.normpath(root)
        if (path == root or path.startswith(root.rstrip("/") + "/")) and len(root) > best_len:
            best, best_len = service, len(root)
    return best


def main(conf: str, path: str, sddl: str) -> int:
    try:
        from samba import ntacls
    except ImportError:
        print(f"Samba's Python bindings are missing for {sys.executable} (Debian's python3-samba)", file=sys.stderr)
        return 2
    from samba.auth_util import system_session_unix
    from samba.param import LoadParm
    from samba.samba3 import param as s3param
    from samba.samba3 import passdb

    lp = LoadParm()
    try:
        lp.load(conf)
    except RuntimeError:
        print(f"Samba cannot load {conf} (missing, unreadable or not an smb.conf)", file=sys.stderr)
        return 2
    s3conf = s3param.get_context()
    s3conf.load(conf)
    service = share_of(s3conf, os.path.normpath(path))
    if service is None:
        print(f"no share in {conf} holds {path}", file=sys.stderr)
        return 2
    passdb.set_secrets_dir(lp.get("private dir"))
    domain_sid = str(passdb.get_global_sam_sid())  # only for SDDL's domain-relative aliases; ours has none
    session = system_session_unix()
    ntacls.setntacl(lp, path, sddl, domain_sid, session, use_ntvfs=False, service=service)
    served = ntacls.getntacl(lp, path, session, direct_db_access=False, service=service)
    print(served.as_sddl())
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: samba_set_nt_acl.py SMB_CONF PATH SDDL", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(main(*sys.argv[1:]))
    except Exception as exc:  # one line for the executor's log, not a traceback
        status: tuple[Any, ...] = exc.args
        if type(exc).__name__ == "NTSTATUSError" and len(status) >= 2 and isinstance(status[0], int):
            print(f"NT status 0x{status[0]:08X}: {status[1]}", file=sys.stderr)  # Samba's own words, by code
        else:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2)
