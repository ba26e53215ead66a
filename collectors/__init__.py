"""Collectors: the processes that observe the world and publish what they see on the bus.

The ``fs`` package watches filesystem permissions (reading each path through
an ACL reader of ``fs.readers``, POSIX ACLs through ``acl``, and remembering
what it published in ``fs.state``); other collectors publish the directory
(users and groups) and folder labels.
"""
