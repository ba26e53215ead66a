"""The filesystem collector: publishes the permission state of every path below the configured roots.

``loop`` drives it (the inbox of watch events, coalescing, rescans, with
``rescans`` deciding when and why and ``paths`` which root a path is in);
``watch`` is the adapter to watchdog and the only module relying on its
internals; ``walk`` reconciles a path or a tree with what was published
(``state``), reading each path with an ACL reader of ``readers`` (one per
kind, ``ACL_READERS``; ``read`` holds the state a reader returns);
``publish`` puts every event out (store → emit → flush → commit), encoded
fast by ``wire``; ``parallel`` spreads a first scan over worker processes;
``metrics`` is what it reports; ``samba_shares`` publishes the doors of the Samba shares
serving the roots (``[[fs]] smb_conf``), started beside the collector. Callers import :class:`FsCollector` from here.
"""

from collectors.fs.loop import FsCollector, ancestors_of

__all__ = ["FsCollector", "ancestors_of"]
