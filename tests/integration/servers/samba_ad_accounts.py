"""Create AD users with passwords in a Samba DC's sam.ldb: run by Debian's own ``python3``, not permwatch's.

Samba's Python bindings (Debian's ``python3-samba``) are bound to the system's interpreter, and an AD password
can be set over LDAP only on a signed or sealed connection, which the test fixtures' LDAP client does not make;
so `SambaADFileServer` runs this file with ``/usr/bin/python3`` on the DC's own ``sam.ldb`` (as root, as the DC
itself does). It reads one JSON object on stdin, so no password is ever on a command line::

    {"smb_conf": "...", "sam_ldb": "...", "ou": "OU=people,DC=...",
     "domain_users_gid": 70000,
     "users": [{"name": "anna", "password": "...", "uid": 71001, "gid": 70000}, ...]}

It creates the OU, each user in it (enabled, RFC 2307 ``uidNumber``/``gidNumber``), and gives Domain Users the
``gidNumber`` (so smbd's primary Unix group of every user is the one the directory publishes). Exits 2 with one
line on stderr when it cannot. Imports nothing of permwatch.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    try:
        import ldb
        from samba.auth import system_session
        from samba.param import LoadParm
        from samba.samdb import SamDB
    except ImportError as exc:
        print(f"Samba's Python bindings are missing (python3-samba): {exc}", file=sys.stderr)
        return 2
    request = json.load(sys.stdin)
    lp = LoadParm()
    lp.load(request["smb_conf"])
    samdb = SamDB(url=request["sam_ldb"], session_info=system_session(), lp=lp)
    try:
        samdb.add({"dn": request["ou"], "objectClass": "organizationalUnit"})
        for user in request["users"]:
            samdb.newuser(
                user["name"],
                user["password"],
                userou=request["ou"].split(",DC=", 1)[0],
                uidnumber=user["uid"],
                gidnumber=user["gid"],
            )
        domain_users = f"CN=Domain Users,CN=Users,{samdb.domain_dn()}"
        message = ldb.Message(ldb.Dn(samdb, domain_users))
        message["gidNumber"] = ldb.MessageElement(str(request["domain_users_gid"]), ldb.FLAG_MOD_REPLACE, "gidNumber")
        samdb.modify(message)
    except ldb.LdbError as exc:
        print(f"creating the accounts failed: {exc.args[-1]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
