"""The directory-file collector's settings: the optional ``[directory]`` table."""

from __future__ import annotations

from pathlib import Path

from permwatch.config import Section


class DirectoryFileConfig(Section):
    path: Path
    source: str = "directory-file"
    watch: bool = True
