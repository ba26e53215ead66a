"""The whole config: the core's tables and those the collectors own (``collectors.registry.SECTIONS``).

Every command that reads a config file loads it here, so a collector's table is
validated with its own model, errors naming the key and the file, while
:mod:`permwatch.config` imports no stage.
"""

from __future__ import annotations

from pathlib import Path

from permwatch.config import Config, with_sections
from permwatch.config import load_config as load_core_config


def config_model() -> type[Config]:
    """:class:`Config` with every collector's table."""
    from collectors.registry import SECTIONS

    return with_sections(SECTIONS)


def load_config(path: Path, environ: dict[str, str] | None = None) -> Config:
    """Read, override from the environment and validate every table; raise :class:`ConfigError`."""
    from collectors.registry import SECTIONS

    return load_core_config(path, environ, sections=SECTIONS)
