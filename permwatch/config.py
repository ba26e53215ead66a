"""Configuration: one TOML file validated by pydantic, overridable by environment.

Every stage's settings are typed here so ``permwatch check-config`` can validate
the whole file without importing any stage. Environment variables of the form
``PERMWATCH__SECTION__KEY=value`` override keys in the file (values are parsed
as TOML literals when they can be, else taken as strings). Errors name the
file and the dotted key, in one line each, and never echo secret values.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from permwatch.events import Severity

ENV_PREFIX = "PERMWATCH__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaConfig(_Section):
    bootstrap_servers: str = Field(min_length=1, description="host:port[,host:port]")
    topic_prefix: str = "permwatch."
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    client_id: str = "permwatch"


class EmbeddedConfig(_Section):
    path: Path = Path("permwatch-events.db")


class TransportConfig(_Section):
    kind: Literal["embedded", "kafka"] = "embedded"
    embedded: EmbeddedConfig = EmbeddedConfig()
    kafka: KafkaConfig | None = None


class FsCollectorConfig(_Section):
    collector_id: str = "fs"
    roots: list[Path] = Field(min_length=1)
    excludes: list[str] = Field(default_factory=list, description="fnmatch globs on full paths or names")
    coalesce_ms: int = Field(default=10, ge=0, le=10_000)
    state_path: Path | None = Field(default=None, description="where the collector remembers what it published")
    watch: bool = True

    @field_validator("roots")
    @classmethod
    def _absolute(cls, roots: list[Path]) -> list[Path]:
        for root in roots:
            if not root.is_absolute():
                raise ValueError(f"root must be an absolute path: {root}")
        return roots


class DirectoryFileConfig(_Section):
    path: Path
    source: str = "directory-file"
    watch: bool = True


class LabelDefinition(_Section):
    severity: Severity = Severity.HIGH
    allowed_groups: list[str] = Field(default_factory=list)
    allowed_users: list[str] = Field(default_factory=list)


class LabelRule(_Section):
    glob: str = Field(min_length=1, description="glob on the folder path: * within a component, ** across")
    label: str = Field(min_length=1)


class LabelsConfig(_Section):
    definitions: dict[str, LabelDefinition] = Field(default_factory=dict)
    rules: list[LabelRule] = Field(default_factory=list)
    always_allowed_groups: list[str] = Field(default_factory=list)
    always_allowed_users: list[str] = Field(
        default_factory=lambda: ["root"], description="root reads everything whatever the ACL says"
    )
    xattr: str = "user.sensitivity"
    marker_file: str = ".sensitivity"


class SinkConfig(_Section):
    model_config = ConfigDict(extra="allow")
    kind: str = Field(min_length=1)
    name: str | None = None


class AlertsConfig(_Section):
    sinks: list[SinkConfig] = Field(default_factory=lambda: [SinkConfig(kind="console")])
    group: str = "permwatch-alerts"


class ProcessorConfig(_Section):
    group: str = "permwatch-processor"
    source: str = "processor"
    batch_max: int = Field(default=5000, ge=1)


class Config(_Section):
    transport: TransportConfig = TransportConfig()
    state_dir: Path = Path("permwatch-state")
    fs: list[FsCollectorConfig] = Field(default_factory=list)
    directory: DirectoryFileConfig | None = None
    labels: LabelsConfig = LabelsConfig()
    processor: ProcessorConfig = ProcessorConfig()
    alerts: AlertsConfig = AlertsConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class ConfigError(Exception):
    """A user mistake in the config: the message is one or more one-line reasons."""


def load_config(path: Path, environ: dict[str, str] | None = None) -> Config:
    """Read, override from the environment and validate; raise :class:`ConfigError`."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    _apply_env(raw, os.environ if environ is None else environ)
    _resolve_relative(raw, path.parent)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(path, exc))) from None
    problems = [
        f"{path}: key 'labels.rules.{i}.label': label {rule.label!r} is not defined in [labels.definitions]"
        for i, rule in enumerate(config.labels.rules)
        if rule.label not in config.labels.definitions
    ]
    if config.transport.kind == "kafka" and config.transport.kafka is None:
        problems.append(f"{path}: key 'transport.kafka': required when transport.kind = 'kafka'")
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def _describe(path: Path, exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in err["loc"]) or "<top>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{path}: key '{key}': {msg}")
    return lines


def _apply_env(raw: dict[str, Any], environ: Any) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment {name}: '{part}' is not a table in the config")
        node[parts[-1]] = _parse_scalar(value)


def _parse_scalar(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _resolve_relative(raw: dict[str, Any], base: Path) -> None:
    """Relative paths in the file are relative to the file, not the working directory."""

    def fix(table: dict[str, Any], key: str) -> None:
        value = table.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value):
            table[key] = str(base / value)

    fix(raw, "state_dir")
    transport = raw.get("transport")
    if isinstance(transport, dict) and isinstance(transport.get("embedded"), dict):
        fix(transport["embedded"], "path")
    if isinstance(raw.get("directory"), dict):
        fix(raw["directory"], "path")
    for section in raw.get("fs", []) if isinstance(raw.get("fs"), list) else []:
        if isinstance(section, dict):
            fix(section, "state_path")
    sinks = raw.get("alerts", {}).get("sinks", []) if isinstance(raw.get("alerts"), dict) else []
    for sink in sinks if isinstance(sinks, list) else []:
        if isinstance(sink, dict):
            fix(sink, "path")
