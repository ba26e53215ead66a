"""Configuration: one TOML file validated by pydantic, overridable by environment.

The settings every stage shares (transport, labels, processor, alerts, metrics)
are typed here; a table only a collector reads (``[[fs]]``, ``[[ldap]]``,
``[directory]``, ``[collector]``) is typed by the collector, which names it in
its registry (``collectors.registry.SECTIONS``) as a :class:`StageSection`. The
CLI hands those to :func:`load_config` (``permwatch.cli.settings``), so the core
never imports a stage. Environment variables of the form
``PERMWATCH__SECTION__KEY=value`` override keys in the file (values are parsed
as TOML literals when they can be, else taken as strings). Errors name the
file and the dotted key, in one line each, and never echo secret values.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from permwatch.events import PersonalData, Severity
from permwatch.secret import SecretUnavailable, read_secret

ENV_PREFIX = "PERMWATCH__"


class Section(BaseModel):
    """A table of the config: unknown keys are mistakes, named as such."""

    model_config = ConfigDict(extra="forbid")


_Section = Section


_KAFKA_TLS = ("SSL", "SASL_SSL")
_KAFKA_SASL = ("SASL_PLAINTEXT", "SASL_SSL")


class KafkaConfig(_Section):
    """The brokers and how to reach them. TLS settings need ``security_protocol`` SSL or SASL_SSL and SASL
    ones SASL_PLAINTEXT or SASL_SSL, so a forgotten protocol cannot silently fall back to plaintext. The SASL
    password is read from ``sasl_password_file`` or ``sasl_password_env``, never written here."""

    bootstrap_servers: str = Field(min_length=1, description="host:port[,host:port]")
    topic_prefix: str = "permwatch."
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    client_id: str = "permwatch"
    session_timeout_seconds: float = Field(
        default=45.0,
        ge=6,
        le=1800,
        description="a group member silent this long is dropped and its partitions move on (broker limits apply)",
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="how long the topics permwatch creates keep records; unset: for good (the history is what "
        "processors rebuild from and workshops replay)",
    )
    # -- opens (#18)
    access_retention_days: float | None = Field(
        default=90.0,
        gt=0,
        description="how long the 'access' topic keeps who opened what in labelled folders; unset: for good",
    )
    delivery_timeout_seconds: float = Field(
        default=120.0,
        ge=1,
        le=86_400,
        description="how long the producer retries a record before reporting it failed (collectors then spool it)",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_ca_file: Path | None = Field(default=None, description="PEM CAs that signed the brokers; None: the system's")
    ssl_cert_file: Path | None = Field(default=None, description="PEM client certificate, for mutual TLS")
    ssl_key_file: Path | None = Field(default=None, validate_default=True, description="its PEM key, unencrypted")
    ssl_check_hostname: bool = Field(default=True, description="a broker's certificate must name its host")
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = Field(default=None, min_length=1, validate_default=True)
    sasl_password: None = Field(default=None, exclude=True, repr=False, description="refused: never in the file")
    sasl_password_file: Path | None = None
    sasl_password_env: str | None = Field(default=None, min_length=1, validate_default=True)

    @field_validator("ssl_ca_file", "ssl_cert_file", "ssl_key_file", mode="after")
    @classmethod
    def _tls_only(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        protocol = info.data.get("security_protocol")
        if path is not None and protocol is not None and protocol not in _KAFKA_TLS:
            raise ValueError(f"needs security_protocol 'SSL' or 'SASL_SSL', not {protocol!r}")
        cert = info.data.get("ssl_cert_file", path)  # absent when it failed: then say nothing more here
        if info.field_name == "ssl_key_file" and (path is None) != (cert is None):
            raise ValueError("set ssl_cert_file and ssl_key_file together (mutual TLS), or neither")
        return path

    @field_validator("sasl_username", "sasl_password_file", mode="after")
    @classmethod
    def _sasl_only(cls, value: str | Path | None, info: ValidationInfo) -> str | Path | None:
        protocol = info.data.get("security_protocol")
        if protocol is None:
            return value  # the protocol itself is wrong; that error says enough
        if value is not None and protocol not in _KAFKA_SASL:
            raise ValueError(f"needs security_protocol 'SASL_PLAINTEXT' or 'SASL_SSL', not {protocol!r}")
        if value is None and info.field_name == "sasl_username" and protocol in _KAFKA_SASL:
            raise ValueError(f"required with security_protocol {protocol!r}")
        return value

    @field_validator("sasl_password", mode="before")
    @classmethod
    def _no_literal_password(cls, value: object) -> None:
        # Not echoed: errors are described without their input.
        raise ValueError("a password is never written in the config: use sasl_password_file or sasl_password_env")

    @field_validator("sasl_password_env", mode="after")
    @classmethod
    def _one_password_source(cls, env: str | None, info: ValidationInfo) -> str | None:
        protocol = info.data.get("security_protocol")
        if protocol is None or "sasl_password_file" not in info.data:
            return env
        if env is not None and protocol not in _KAFKA_SASL:
            raise ValueError(f"needs security_protocol 'SASL_PLAINTEXT' or 'SASL_SSL', not {protocol!r}")
        has_file = info.data["sasl_password_file"] is not None
        if protocol in _KAFKA_SASL and has_file == (env is not None):
            raise ValueError(f"set exactly one of sasl_password_file and sasl_password_env with {protocol!r}")
        return env


class EmbeddedConfig(_Section):
    path: Path = Field(default=Path("events.db"), description="the event log; default: events.db under state_dir")


class TransportConfig(_Section):
    kind: Literal["embedded", "kafka", "confluent"] = "embedded"
    embedded: EmbeddedConfig = EmbeddedConfig()
    kafka: KafkaConfig | None = None


class LabelDefinition(_Section):
    severity: Severity = Severity.HIGH
    allowed_groups: list[str] = Field(default_factory=list)
    allowed_users: list[str] = Field(default_factory=list)
    alert_on_names: bool = Field(
        default=True,
        description="false: an exposure of names only (outsiders can list a folder but not enter it) is "
        "recorded with kind 'names' but not alerted; one of contents always is",
    )
    # -- breach-report facts (#18)
    personal_data: PersonalData | None = Field(
        default=None, description="what personal data the folders hold (categories, approximate numbers, owner)"
    )
    # respond (issue 19): what `permwatch revert`, the Slack Revert button and the collector may do
    remediation: Literal["off", "on-command", "automatic"] = Field(
        default="off",
        description="off: never revert; on-command: revert when asked (permwatch revert, the Slack button); "
        "automatic: also revert every new exposure as soon as it opens (not what a first scan finds)",
    )


class LabelRule(_Section):
    """A policy rule: folders whose absolute path matches ``glob`` get ``label``.

    ``*`` and ``?`` match within one path component, ``**`` across components:
    ``/srv/share/hr/cases/*`` labels each folder directly in ``cases``, not ``cases``
    itself nor anything deeper (a label covers its folder's subtree anyway);
    ``/srv/share/**/ledning`` labels a ``ledning`` folder at any depth. Folder paths
    are absolute, so a relative glob would match nothing and is refused.
    """

    glob: str = Field(min_length=1, description="glob on the absolute folder path: * within a component, ** across")
    label: str = Field(min_length=1)

    @field_validator("glob")
    @classmethod
    def _absolute_glob(cls, glob: str) -> str:
        if not glob.startswith(("/", "**")):
            raise ValueError(f"must be an absolute path glob (start with / or **), or it matches nothing: {glob!r}")
        if len(glob) > 1 and glob.endswith("/"):
            raise ValueError(f"folder paths have no trailing slash, so this matches nothing: {glob!r}")
        return glob


class LabelsConfig(_Section):
    definitions: dict[str, LabelDefinition] = Field(default_factory=dict)
    rules: list[LabelRule] = Field(default_factory=list)
    always_allowed_groups: list[str] = Field(
        default_factory=list, description="added to every label's allowed groups (direct members, as there)"
    )
    always_allowed_users: list[str] = Field(
        default_factory=lambda: ["root"],
        description="added to every label's allowed users; root by default, as it reads everything whatever the "
        "ACL says. Setting the key replaces the default: list root to keep it; [] allows nobody extra",
    )
    xattr: str = "user.sensitivity"
    marker_file: str = ".sensitivity"


class SinkConfig(_Section):
    model_config = ConfigDict(extra="allow")
    kind: str = Field(min_length=1)
    name: str | None = None


class AlertsConfig(_Section):
    sinks: list[SinkConfig] = Field(
        default_factory=lambda: [SinkConfig(kind="console")],
        description="default: one console sink; any [[alerts.sinks]] table replaces it",
    )
    group: str = "permwatch-alerts"
    group_window_seconds: float = Field(default=5.0, ge=0, description="exposures opened this close form one alert")
    group_actor_window_seconds: float = Field(default=300.0, ge=0, description="the same actor's changes this close")
    hide_below_label: bool = Field(default=False, description="default for every sink: paths below the folder as '…'")


class ProcessorConfig(_Section):
    group: str = "permwatch-processor"
    source: str = "processor"
    batch_max: int = Field(default=5000, ge=1)
    partitioned: bool = Field(
        default=False,
        description="several processors share the fs topic's partitions (Kafka, either client); "
        "see processor/partitioned.py",
    )
    instance_id: str = Field(
        default="",
        max_length=128,
        pattern=r"^[A-Za-z0-9._-]*$",
        description="stable and unique per processor when partitioned (default: the host name): names its "
        "directory group, its checkpoint and its member of the shared group (two with one name fence each other)",
    )
    checkpoint: bool = Field(
        default=True, description="snapshot the state now and then, so a restart replays only what came after it"
    )
    checkpoint_path: Path | None = Field(
        default=None,
        description="the snapshot file; default <state_dir>/processor-<group>.checkpoint "
        "(partitioned: processor-<group>-<instance_id>.checkpoint)",
    )
    checkpoint_interval_seconds: float = Field(
        default=30.0, gt=0, le=86_400, description="at most this often, after a commit (a snapshot pauses the batch)"
    )
    max_users_listed: int = Field(
        default=200,
        ge=0,
        le=10_000,
        description="outsiders an exposure record names at most (users_truncated says when there are more); "
        "the workshop commands (exposures --json, report) always list them all",
    )


class MetricsConfig(_Section):
    """Where this process serves Prometheus metrics at ``/metrics``.

    ``listen`` is ``host:port`` (``[::1]:9464`` for IPv6, ``:9464`` for every
    interface); port 0 takes a free port and logs it; ``""`` (the default) serves
    nothing. Each role is its own process with its own endpoint, so roles sharing
    a host and a config file need distinct ports: set ``PERMWATCH__METRICS__LISTEN``
    per process.
    """

    listen: str = Field(default="", description='e.g. "127.0.0.1:9464"; "" serves no metrics')

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        if listen:
            cls.split(listen)
        return listen

    @staticmethod
    def split(listen: str) -> tuple[str, int]:
        host, colon, port = listen.strip().rpartition(":")
        if not colon or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"expected host:port with a port of 0-65535, got {listen!r}")
        return host.removeprefix("[").removesuffix("]") or "0.0.0.0", int(port)

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None when metrics are off."""
        return self.split(self.listen) if self.listen else None


# -- the breach report's contact points (#18)


class ContactConfig(_Section):
    """A contact point a breach report names (GDPR Art. 33(3)(b))."""

    name: str = Field(min_length=1)
    address: str | None = None
    email: str | None = None
    phone: str | None = None


class BreachReportConfig(_Section):
    """What ``permwatch breach-report`` fills in that no event knows."""

    controller: ContactConfig | None = Field(default=None, description="the controller: the organisation")
    dpo: ContactConfig | None = Field(default=None, description="the data protection officer, or another contact")


class Config(_Section):
    transport: TransportConfig = TransportConfig()
    state_dir: Path = Path("permwatch-state")
    labels: LabelsConfig = LabelsConfig()
    processor: ProcessorConfig = ProcessorConfig()
    alerts: AlertsConfig = AlertsConfig()
    metrics: MetricsConfig = MetricsConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    breach_report: BreachReportConfig = BreachReportConfig()  # (#18)

    def stage_settings(self, name: str) -> list[Any]:
        """The settings of the stage-owned table ``name`` (see :class:`StageSection`): each of ``[[name]]``,
        or ``[name]`` alone, or none when the config has no such table."""
        value = getattr(self, name, None)
        if value is None:
            return []
        return list(value) if isinstance(value, list) else [value]

    @model_validator(mode="after")
    def _event_log_with_the_state(self) -> Config:
        # like every other state path: not wherever the process happened to start (for systemd, /)
        if "path" not in self.transport.embedded.model_fields_set:
            embedded = EmbeddedConfig(path=self.state_dir / "events.db")
            self.transport = self.transport.model_copy(update={"embedded": embedded})
        return self


# --- tables a stage owns (registered by the stage, handed in by the CLI) ---


@dataclass(frozen=True)
class StageSection:
    """A top-level table a stage owns and types: ``[[name]]`` (``repeated``), an optional ``[name]``, or a
    ``[name]`` always present with its defaults (``always``); ``paths`` are its dotted keys that hold paths,
    relative to the config file when relative."""

    model: type[BaseModel]
    repeated: bool = False
    always: bool = False
    paths: tuple[str, ...] = ()

    def field(self) -> tuple[Any, Any]:
        """The annotation and default of this table as a field of :class:`Config`."""
        if self.repeated:
            return list[self.model], Field(default_factory=list)  # type: ignore[name-defined]
        if self.always:
            return self.model, Field(default_factory=self.model)
        return self.model | None, None


_WITH_SECTIONS: dict[tuple[tuple[str, StageSection], ...], type[Config]] = {}


def with_sections(sections: Mapping[str, StageSection]) -> type[Config]:
    """:class:`Config` with the stages' tables added (one class per set of tables, so equal configs compare
    equal)."""
    key = tuple(sections.items())
    if key not in _WITH_SECTIONS:
        fields = {name: section.field() for name, section in sections.items()}
        _WITH_SECTIONS[key] = create_model("Config", __base__=Config, **fields)  # type: ignore[call-overload]
    return _WITH_SECTIONS[key]


class ConfigError(Exception):
    """A user mistake in the config: the message is one or more one-line reasons."""


def load_config(
    path: Path, environ: dict[str, str] | None = None, *, sections: Mapping[str, StageSection] | None = None
) -> Config:
    """Read, override from the environment and validate; raise :class:`ConfigError`.

    ``sections`` are the tables the stages own (see :class:`StageSection`); without them such a table is an
    unknown key."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    overridden = _apply_env(raw, os.environ if environ is None else environ)
    _resolve_relative(raw, path.parent, sections or {})
    try:
        config = with_sections(sections or {}).model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(path, exc, overridden))) from None
    problems = [
        f"{path}: key 'labels.rules.{i}.label': label {rule.label!r} is not defined in [labels.definitions]"
        for i, rule in enumerate(config.labels.rules)
        if rule.label not in config.labels.definitions
    ]
    if config.transport.kind in ("kafka", "confluent") and config.transport.kafka is None:
        problems.append(f"{path}: key 'transport.kafka': required when transport.kind = '{config.transport.kind}'")
    kafka = config.transport.kafka
    if config.transport.kind in ("kafka", "confluent") and kafka is not None and kafka.security_protocol in _KAFKA_SASL:
        try:  # read now so check-config finds a missing password; the transport reads it again when it connects
            read_secret(
                "transport.kafka.sasl_password",
                file=kafka.sasl_password_file,
                env=kafka.sasl_password_env,
                environ=os.environ if environ is None else environ,
            )
        except SecretUnavailable as exc:
            problems.append(f"{path}: {exc}")
    if config.processor.partitioned and config.transport.kind not in ("kafka", "confluent"):
        problems.append(
            f"{path}: key 'processor.partitioned': needs transport.kind = 'kafka' or 'confluent' (consumer groups)"
        )
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def _describe(path: Path, exc: ValidationError, overridden: dict[str, str]) -> list[str]:
    """One line per problem, naming the file and the key, and the variable where the value came from one."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in err["loc"]) or "<top>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        variable = next((name for k, name in overridden.items() if key == k or key.startswith(f"{k}.")), None)
        where = f" (set by environment variable {variable})" if variable else ""
        lines.append(f"{path}: key '{key}'{where}: {' '.join(msg.split())}")
    return lines


def _apply_env(raw: dict[str, Any], environ: Any) -> dict[str, str]:
    """Override ``raw`` from PERMWATCH__SECTION__KEY variables; return dotted key → the variable that set it."""
    overridden: dict[str, str] = {}
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
        overridden[".".join(parts)] = name
    return overridden


def _parse_scalar(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _resolve_relative(raw: dict[str, Any], base: Path, sections: Mapping[str, StageSection]) -> None:
    """Relative paths in the file are relative to the file, not the working directory."""

    def fix(table: dict[str, Any], key: str) -> None:
        value = table.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value):
            table[key] = str(base / value)

    fix(raw, "state_dir")
    transport = raw.get("transport")
    if isinstance(transport, dict) and isinstance(transport.get("embedded"), dict):
        fix(transport["embedded"], "path")
    if isinstance(transport, dict) and isinstance(transport.get("kafka"), dict):
        for key in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "sasl_password_file"):
            fix(transport["kafka"], key)
    if isinstance(raw.get("processor"), dict):
        fix(raw["processor"], "checkpoint_path")
    for name, section in sections.items():
        value = raw.get(name)
        tables = value if section.repeated and isinstance(value, list) else [value]
        for table in tables:
            for dotted in section.paths:
                *parents, key = dotted.split(".")
                for part in parents:
                    table = table.get(part) if isinstance(table, dict) else None
                if isinstance(table, dict):
                    fix(table, key)
    sinks = raw.get("alerts", {}).get("sinks", []) if isinstance(raw.get("alerts"), dict) else []
    for sink in sinks if isinstance(sinks, list) else []:
        if isinstance(sink, dict):
            for key in ("path", "token_file", "secret_file", "ca_file", "url_file", "password_file"):
                fix(sink, key)
