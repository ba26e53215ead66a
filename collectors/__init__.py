"""Collectors: the processes that observe the world and publish what they see on the bus.

``fs`` watches filesystem permissions (reading ACLs through ``acl`` and
remembering what it published in ``fs.state``); other collectors publish the
directory (users and groups) and folder labels.
"""
