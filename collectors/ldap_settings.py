"""An LDAP collector's settings: one ``[[ldap]]`` table per directory server, attribute names included."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from permwatch.config import Section


class LdapAttributeNames(Section):
    """Which attribute holds what; the defaults fit OpenLDAP with the nis (RFC 2307) schema.

    ``member`` lists the DN-valued membership attributes (nested groups come from
    these); ``member_uid`` holds bare user names (posixGroup). An account counts as
    disabled when ``locked_time`` holds the permanent-lock value ``000001010000Z``
    (ppolicy), ``shadow_expire`` (days since 1970) has passed, ``account_control``
    has bit 2 set (Active Directory) or ``account_lock`` is TRUE (389 DS). Set a
    name to ``""`` to ignore that attribute.
    """

    user_name: str = "uid"
    group_name: str = "cn"
    uid_number: str = "uidNumber"
    gid_number: str = "gidNumber"
    member: list[str] = Field(default_factory=lambda: ["member", "uniqueMember"])
    member_uid: str = "memberUid"
    locked_time: str = "pwdAccountLockedTime"
    shadow_expire: str = "shadowExpire"
    account_control: str = "userAccountControl"
    account_lock: str = "nsAccountLock"
    unique_id: str = Field(default="entryUUID", description="stable id across renames (AD: objectGUID)")
    change_sequence: str = Field(default="entryCSN", description="per-entry change stamp, to skip replays")
    modify_timestamp: str = "modifyTimestamp"
    modifiers_name: str = Field(default="modifiersName", description="who changed an entry last (snapshot mode)")


class LdapCollectorConfig(Section):
    """One directory server to follow. The password is read from a file or an environment variable, never here."""

    collector_id: str = Field(default="ldap", min_length=1, max_length=64, description="event source and state name")
    uri: str = Field(min_length=1, description="ldap://host:port or ldaps://host:port")
    bind_dn: str | None = Field(default=None, description="None binds anonymously")
    password_file: Path | None = None
    password_env: str | None = None
    start_tls: bool = False
    ca_file: Path | None = Field(default=None, description="CA bundle that signed the server certificate")
    user_base: str = Field(min_length=1)
    group_base: str = Field(min_length=1)
    user_object_classes: list[str] = Field(default_factory=lambda: ["posixAccount"], min_length=1)
    group_object_classes: list[str] = Field(
        default_factory=lambda: ["groupOfNames", "groupOfUniqueNames", "posixGroup"], min_length=1
    )
    attributes: LdapAttributeNames = LdapAttributeNames()
    mode: Literal["accesslog", "snapshot", "persistent_search", "dirsync"] = Field(
        default="accesslog", description="how changes are learnt; a name in collectors.ldap.CHANGE_MODES"
    )
    accesslog_base: str = "cn=accesslog"
    referential_integrity: bool = Field(
        default=True,
        description="no longer needed: after a rename or deletion the collector re-reads the groups that named the "
        "entry and takes what the server holds, with or without refint; accepted so existing configs still load",
    )
    poll_seconds: float = Field(
        default=1.0, gt=0, le=86_400, description="accesslog polls are cheap; a snapshot poll lists every entry"
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    page_size: int = Field(default=500, ge=1, le=100_000)
    reconcile_seconds: float = Field(
        default=900.0,
        gt=0,
        le=7 * 86_400,
        description="also read the whole directory this often (and on every reconnect) and publish only how it "
        "differs: finds what no change stream reports (slapadd/slapmodify, a restored backup)",
    )
    backoff_max_seconds: float = Field(
        default=5.0,
        ge=0.1,
        description="longest wait between reconnects (jittered): how soon a returning server is seen",
    )
    state_path: Path | None = Field(default=None, description="cursor and directory copy; default under state_dir")

    @field_validator("password_file", "ca_file", "state_path")
    @classmethod
    def _absolute_file(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_absolute():
            raise ValueError(f"must be an absolute path: {path}")
        return path

    @model_validator(mode="after")
    def _one_password_source(self) -> LdapCollectorConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set password_file or password_env, not both")
        if self.bind_dn is not None and self.password_file is None and self.password_env is None:
            raise ValueError("bind_dn needs password_file or password_env")
        return self
