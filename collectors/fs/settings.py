"""The filesystem collector's settings: one ``[[fs]]`` table each, validated when the config loads."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from permwatch.config import Section


class FsCollectorConfig(Section):
    collector_id: str = "fs"
    roots: list[Path] = Field(min_length=1)
    excludes: list[str] = Field(default_factory=list, description="fnmatch globs on full paths or names")
    coalesce_ms: int = Field(default=10, ge=0, le=10_000)
    burst_paths: int = Field(
        default=2000,
        ge=1,
        description="changed paths waiting to be read that make a burst: its changes are held until it goes quiet"
        " for burst_quiet_ms (at most 30 s) and read together, a directory with many of them listed once",
    )
    burst_quiet_ms: int = Field(default=50, ge=1, le=10_000, description="how long without a change ends a burst")
    state_path: Path | None = Field(default=None, description="where the collector remembers what it published")
    watch: bool = True
    scan_workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="processes that read the tree in a first scan beside the collector (0: none, the collector's"
        " own thread walks); one per core makes a first scan of a large share about twice as fast",
    )
    acl_reader: str = Field(
        default="posix",
        min_length=1,
        description="how each path's owner, group, mode and ACL are read: a name in collectors.fs.readers"
        ".ACL_READERS (posix: mode bits and POSIX ACLs from the system.posix_acl_* xattrs)",
    )
    acl_reader_options: dict[str, str] = Field(
        default_factory=dict,
        description="keyword settings of the ACL reader, e.g. for ntacl (Samba shares): xattr_name, default"
        " security.NTACL (Samba 4.18+: acl_xattr:security_acl_name)",
    )
    # -- who changed it, who opened it (#18)
    actors: str = Field(
        default="none",
        min_length=1,
        description="who made a permission change: a name in collectors.fs.actors.ACTOR_SOURCES, or several"
        " joined by commas, asked in order (none; fanotify: local changes, needs CAP_SYS_ADMIN and"
        " CAP_DAC_READ_SEARCH; smb_audit: Samba's vfs_full_audit log, see smb_audit_log; audit: the Linux audit"
        " log auditd writes, the login uid behind sudo included, see audit_log and audit_key)",
    )
    opens: str = Field(
        default="none",
        min_length=1,
        description="who opened what in labelled folders, published on the 'access' topic: a name in"
        " collectors.fs.opens.OPEN_SOURCES (none; fanotify: local opens, same capabilities as actors;"
        " fanotify_permission: local opens held until their process is named, so every reader is named, at a"
        " round trip per open; never refused)",
    )
    opens_response_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="with opens = fanotify_permission: the longest an open waits for the collector; after it the"
        " open is allowed unnamed (a stuck collector never blocks readers)",
    )
    smb_audit_log: Path | None = Field(
        default=None,
        description="Samba's vfs_full_audit log (prefix permwatch|%u|%I|%S), for actors or opens = smb_audit",
    )
    audit_log: Path = Field(
        default=Path("/var/log/audit/audit.log"), description="auditd's log (log_format RAW), for actors = audit"
    )
    audit_key: str = Field(
        default="permwatch", min_length=1, description="the key (-k) of the audit rules whose records name actors"
    )

    # -- Samba's share-level doors (#16)
    smb_conf: Path | None = Field(
        default=None,
        description="a Samba file server's smb.conf (with acl_reader = ntacl): the shares serving these roots,"
        " their valid users, invalid users and share ACL (sharesec), read at start and on change",
    )

    @field_validator("roots")
    @classmethod
    def _absolute(cls, roots: list[Path]) -> list[Path]:
        for root in roots:
            if not root.is_absolute():
                raise ValueError(f"root must be an absolute path: {root}")
        return roots
