"""Secrets for sinks (a Slack bot token, a webhook key): named in the config, read from the environment or a file.

The config holds only *where* a secret is (``token_env`` / ``token_file``,
``secret_env`` / ``secret_file``), never the secret, so a config file, a
validation error or a sink's repr cannot leak it. Errors name the variable or
the file, never the value. The ``check_*`` functions are for config
validators (so ``permwatch check-config`` says which key is wrong); sinks call
:func:`read_secret` once when they are built.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationInfo


class SecretUnavailable(ValueError):
    """The named secret is not there; the message says where it was looked for."""


def check_env_source(name: str | None) -> str | None:
    """Field validator body for ``*_env``: the variable must be set and non-empty."""
    if name is not None:
        _from_env(name)
    return name


def check_file_source(path: Path | None, info: ValidationInfo, *, what: str) -> Path | None:
    """Field validator body for ``*_file`` (declared after ``*_env``, validated by default): exactly one source."""
    env_key = f"{what}_env"
    if env_key not in info.data:
        return path  # the _env key itself failed; that error says enough
    if (info.data[env_key] is None) == (path is None):
        raise SecretUnavailable(f"set exactly one of {what}_env and {what}_file")
    if path is not None:
        _from_file(path)
    return path


def read_secret(env: str | None, file: Path | None, *, what: str) -> str:
    if env is not None and file is None:
        return _from_env(env)
    if file is not None and env is None:
        return _from_file(file)
    raise SecretUnavailable(f"set exactly one of {what}_env and {what}_file")


def _from_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise SecretUnavailable(f"environment variable {name} is not set or empty")
    return value


def _from_file(path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretUnavailable(f"cannot read {path}: {exc.strerror}") from None
    if not value:
        raise SecretUnavailable(f"{path} is empty")
    return value
