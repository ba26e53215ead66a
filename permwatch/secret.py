"""Secrets the core needs (the Kafka SASL password), read from a file or an environment variable.

The config names only *where* a secret is (``*_file`` or ``*_env``), so a
config file, a validation error or a model's repr cannot leak it. Errors say
which config key and which file or variable, never the value. The sinks
(``alerts/secrets.py``) and the LDAP collector have readers of their own from
before this one: they strip surrounding whitespace where this one drops only a
trailing newline, and their messages name their own keys. Folding them onto
this reader is open work; stages may import it (the core imports no stage).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


class SecretUnavailable(ValueError):
    """The named secret is not there; the message names the key and where it was looked for."""


def read_secret(key: str, *, file: Path | None, env: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The secret from ``file`` or the variable ``env`` (exactly one is set); ``key`` is the dotted
    config key without its ``_file``/``_env`` suffix, e.g. ``transport.kafka.sasl_password``."""
    if (file is None) == (env is None):
        raise SecretUnavailable(f"key '{key}_file' or '{key}_env': set exactly one")
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").rstrip("\r\n")  # one trailing newline is an editor's
        except OSError as exc:
            raise SecretUnavailable(f"key '{key}_file': cannot read {file}: {exc.strerror}") from None
        if not value:
            raise SecretUnavailable(f"key '{key}_file': {file} is empty")
        return value
    assert env is not None
    value = (os.environ if environ is None else environ).get(env, "")
    if not value:
        raise SecretUnavailable(f"key '{key}_env': environment variable {env} is not set or empty")
    return value
