"""The remote SMB collector's settings: one ``[[smb]]`` table per share read over the network."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from permwatch.config import Section


class SmbCollectorConfig(Section):
    """One SMB share on a file server or NAS where nothing of ours runs, read as a service account.

    The password is read from ``password_file`` or the environment variable ``password_env``, never from here.
    Folders are published under ``path_prefix`` (an absolute path of your choosing, e.g.
    ``/smb/fileserver/share``): labels name them by it. ``roots`` are share-relative folders to follow (``""``
    is the whole share).
    """

    collector_id: str = Field(default="smb", min_length=1, max_length=64, description="event source and state name")
    server: str = Field(min_length=1, description="host name or address of the file server")
    share: str = Field(min_length=1, max_length=80, description="the share's name, without slashes")
    port: int = Field(default=445, ge=1, le=65535)
    username: str = Field(min_length=1, description="the service account (DOMAIN\\name or name@realm)")
    password_file: Path | None = None
    password_env: str | None = None
    auth: Literal["negotiate", "ntlm", "kerberos"] = "negotiate"
    encrypt: bool = Field(default=False, description="require SMB3 encryption (signing is always required)")
    path_prefix: str = Field(min_length=2, description="absolute path the share's folders are published under")
    roots: list[str] = Field(default_factory=lambda: [""], min_length=1)
    in_flight: int = Field(default=8, ge=1, le=64, description="folders read at once during a walk")
    connections: int = Field(
        default=2,
        ge=1,
        le=16,
        description="connections to the share, each arming and reading its own top-level folders: smbd serves "
        "each in a process of its own, so two or more spread its CPU over the server's cores",
    )
    reconcile_seconds: float = Field(
        default=3600.0, ge=60.0, description="walk the whole share this often: bounds the delay of a missed change"
    )
    traverse: Literal["bypass", "enforced"] = Field(
        default="bypass",
        description="bypass: Windows' default (Everyone holds the bypass-traverse privilege); enforced: every "
        "ancestor must grant traverse, as on Samba",
    )

    @field_validator("share")
    @classmethod
    def _bare_share(cls, value: str) -> str:
        if any(c in value for c in "\\/"):
            raise ValueError("the share's name only, e.g. 'socialkontoret', not a path")
        return value

    @field_validator("path_prefix")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value.endswith("/") or "//" in value:
            raise ValueError("an absolute path without a trailing slash, e.g. '/smb/fileserver/share'")
        return value

    @field_validator("roots")
    @classmethod
    def _relative(cls, value: list[str]) -> list[str]:
        cleaned = [root.replace("\\", "/").strip("/") for root in value]
        if any(part in (".", "..") for root in cleaned for part in root.split("/")):
            raise ValueError("share-relative folders without '.' or '..'")
        return cleaned

    @model_validator(mode="after")
    def _kerberos_principal(self) -> SmbCollectorConfig:
        # Kerberos asks the KDC for name@REALM; DOMAIN\\name is NTLM's form and would fail only at the KDC
        if self.auth == "kerberos" and ("@" not in self.username or "\\" in self.username):
            raise ValueError('username: with auth = "kerberos" give name@REALM, e.g. svc-permwatch@KOMMUN.LOCAL')
        return self

    @model_validator(mode="after")
    def _one_password_source(self) -> SmbCollectorConfig:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("give exactly one of password_file and password_env")
        return self

    def password(self) -> str:
        """The password, read now (a file's last line break dropped); `ValueError` names where it was looked for."""
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if not value:
                raise ValueError(f"the environment variable {self.password_env} (password_env) is not set")
            return value
        assert self.password_file is not None
        try:
            return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read password_file {self.password_file}: {exc.strerror}") from None

    def published_path(self, relative: str) -> str:
        """A share-relative folder as published: under ``path_prefix``."""
        return f"{self.path_prefix}/{relative}" if relative else self.path_prefix
