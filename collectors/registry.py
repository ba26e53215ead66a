"""Collector kinds by name: the config table each one owns and how one is started.

``COLLECTORS`` is the explicit list (like ``alerts.registry.SINKS``): a kind's
settings model types its table (``[[fs]]``, ``[[ldap]]``, ``[directory]``), and
its ``start`` builds one collector from one table and hands it to the process
to run. ``SECTIONS`` is what the CLI gives :func:`permwatch.config.load_config`
so those tables are validated, errors naming the key and the file, without the
core knowing any collector. :func:`start_collectors` starts every configured
collector of a process over one emitter (and the spool, over Kafka).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectors.directory_settings import DirectoryFileConfig
from collectors.fs.settings import FsCollectorConfig
from collectors.ldap_settings import LdapCollectorConfig
from collectors.runner import BusEmitter
from collectors.settings import CollectorConfig
from collectors.smb.settings import SmbCollectorConfig
from collectors.spool import SpoolingBus, open_spooling_bus
from permwatch.config import Config, ConfigError, StageSection
from permwatch.keys import FsKeys
from permwatch.metrics import Metrics
from permwatch.transport.base import Bus, LogExtent

log = logging.getLogger("permwatch")


@dataclass(frozen=True)
class CollectorContext:
    """What every collector of a process is started with."""

    config: Config
    log: Bus
    """The event log itself (what it is, for the state a collector binds to it)."""
    emitter: BusEmitter
    """Shared by the directory collectors; a batching collector makes its own over ``bus``."""
    bus: Bus
    """Where collectors publish: the spool over Kafka, else the event log."""
    router: FsKeys
    metrics: Metrics
    spool: SpoolingBus | None
    run: Callable[[str, Any], None]
    """Runs a stage (``run(stop)``) in a thread of its own, under a name."""

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir


@dataclass(frozen=True)
class CollectorKind:
    """One kind of collector: its table and how to start one from it."""

    section: StageSection
    start: Callable[[Any, CollectorContext], None]
    check: Callable[[Any, str], list[str]] | None = None
    """What only the collector knows is wrong in one table (its key, e.g. ``fs.0``): one line each."""


def _start_directory(settings: DirectoryFileConfig, context: CollectorContext) -> None:
    from collectors.directory_file import DirectoryFileCollector, DirectoryFileError

    directory = DirectoryFileCollector(settings, context.emitter, metrics=context.metrics)
    try:
        directory.load()
    except DirectoryFileError as exc:
        raise ConfigError(str(exc)) from None
    context.run("directory", directory)


def _start_ldap(settings: LdapCollectorConfig, context: CollectorContext) -> None:
    from collectors.ldap import LdapCollector

    state = settings.state_path or context.state_dir / f"ldap-{settings.collector_id}.json"
    collector = LdapCollector(settings, context.emitter, state_path=state, metrics=context.metrics)
    context.run(f"ldap:{settings.collector_id}", collector)


def _start_fs(settings: FsCollectorConfig, context: CollectorContext) -> None:
    from collectors.fs import FsCollector
    from collectors.fs.state import bind_to_log
    from collectors.labels import LabelPolicy

    labeller = LabelPolicy(context.config.labels, source=settings.collector_id)
    state_path = settings.state_path or context.state_dir / f"fs-{settings.collector_id}.db"
    bus = context.log
    if isinstance(bus, LogExtent) and bus.log_id is not None and bind_to_log(state_path, bus.log_id):
        log.warning(
            "fs collector %s: what it published went to another event log than %s; publishing everything again",
            settings.collector_id,
            bus.describe(),
        )
    emitter = BusEmitter(context.bus, context.metrics, router=context.router, batch=True)  # one per collector
    collector = FsCollector(settings, emitter, labeller=labeller, state_path=state_path, metrics=context.metrics)
    if context.spool is not None:
        context.spool.on_recovered(collector.request_spool_rescan)
    context.run(f"fs:{settings.collector_id}", collector)
    if settings.smb_conf is not None:
        _start_samba_shares(settings, context)


def _start_samba_shares(settings: FsCollectorConfig, context: CollectorContext) -> None:
    """The shares serving an fs collector's roots, from its ``smb_conf`` (issue 16): their doors on the fs topic."""
    from collectors.fs.samba_shares import SambaShareWatcher

    assert settings.smb_conf is not None
    emitter = BusEmitter(context.bus, context.metrics, router=context.router)
    state_path = context.state_dir / f"smb-shares-{settings.collector_id}.json"
    watcher = SambaShareWatcher(
        settings.smb_conf,
        settings.roots,
        emitter.emit,
        emitter.flush,
        source=settings.collector_id,
        state_path=state_path,
    )
    context.run(f"smb-shares:{settings.collector_id}", watcher)


def _check_fs(settings: FsCollectorConfig, key: str) -> list[str]:
    """``actors`` and ``opens`` (#18): each name a known source, smb_audit with its log."""
    from collectors.fs.actors import ACTOR_SOURCES
    from collectors.fs.opens import OPEN_SOURCES

    problems = []
    for name, value, known in (("actors", settings.actors, ACTOR_SOURCES), ("opens", settings.opens, OPEN_SOURCES)):
        names = [part.strip() for part in value.split(",") if part.strip()]
        unknown = [part for part in names if part not in known]
        if unknown:
            listed = ", ".join(sorted(known))
            problems.append(f"key '{key}.{name}': {unknown[0]!r} names no source (known: {listed})")
        elif "smb_audit" in names and settings.smb_audit_log is None:
            problems.append(f"key '{key}.smb_audit_log': required when {name} names smb_audit")
    if settings.smb_conf is not None and settings.acl_reader != "ntacl":
        problems.append(f"key '{key}.smb_conf': share doors gate SMB reads, which need acl_reader = \"ntacl\"")
    elif settings.smb_conf is not None and not settings.smb_conf.is_file():
        problems.append(f"key '{key}.smb_conf': {settings.smb_conf} is not a file")
    return problems


def _start_smb(settings: SmbCollectorConfig, context: CollectorContext) -> None:
    from collectors.labels import LabelPolicy
    from collectors.smb.collector import SmbCollector

    emitter = BusEmitter(context.bus, context.metrics, router=context.router, batch=True)  # one per collector
    try:
        collector = SmbCollector(settings, emitter, LabelPolicy(context.config.labels, source=settings.collector_id))
    except ValueError as exc:  # the password file or variable: a user's mistake, said in one line
        raise ConfigError(f"[[smb]] {settings.collector_id}: {exc}") from None
    context.run(f"smb:{settings.collector_id}", collector)


COLLECTORS: dict[str, CollectorKind] = {
    "directory": CollectorKind(StageSection(DirectoryFileConfig, paths=("path",)), _start_directory),
    "ldap": CollectorKind(StageSection(LdapCollectorConfig, repeated=True), _start_ldap),
    "fs": CollectorKind(
        StageSection(FsCollectorConfig, repeated=True, paths=("state_path", "smb_audit_log", "smb_conf", "audit_log")),
        _start_fs,
        _check_fs,
    ),
    "smb": CollectorKind(StageSection(SmbCollectorConfig, repeated=True, paths=("password_file",)), _start_smb),
}
"""Started in this order: the directory before the permissions that name its principals."""

SECTIONS: dict[str, StageSection] = {
    "collector": StageSection(CollectorConfig, always=True, paths=("spool.path",)),
    **{name: kind.section for name, kind in COLLECTORS.items()},
}
"""Every config table the collectors own, for :func:`permwatch.config.load_config`."""


def collector_problems(config: Config, path: Path) -> list[str]:
    """Every collector table's problems only its collector knows (see :attr:`CollectorKind.check`), each one line
    naming the file and the key."""
    problems = []
    for name, kind in COLLECTORS.items():
        if kind.check is None:
            continue
        for i, settings in enumerate(config.stage_settings(name)):
            key = f"{name}.{i}" if kind.section.repeated else name
            problems += [f"{path}: {line}" for line in kind.check(settings, key)]
    return problems


def start_collectors(
    config: Config, bus: Bus, metrics: Metrics, run: Callable[[str, Any], None], closers: list[Callable[[], None]]
) -> None:
    """Start every collector ``config`` names, publishing to ``bus`` (through the spool over Kafka); the spool's
    ``close`` is added to ``closers``, to run once the collectors stopped."""
    roots = [root for fs in config.stage_settings("fs") for root in fs.roots]
    roots += [smb.published_path(root) for smb in config.stage_settings("smb") for root in smb.roots]
    router = FsKeys(roots)
    spool = None
    if config.transport.kind in ("kafka", "confluent"):
        shared = config.stage_settings("collector")[0]
        spool = open_spooling_bus(bus, shared.spool, state_dir=config.state_dir, metrics=metrics)
    collector_bus: Bus = bus if spool is None else spool
    if spool is not None:
        closers.append(spool.close)
    # A full spool raises RecordDropped: the directory collectors then publish again from what they last
    # published (see LdapCollector.catch_up, DirectoryFileCollector.run).
    emitter = BusEmitter(collector_bus, metrics, router=router)
    context = CollectorContext(config, bus, emitter, collector_bus, router, metrics, spool, run)
    for name, kind in COLLECTORS.items():
        for settings in config.stage_settings(name):
            kind.start(settings, context)
    _start_revert(context)
    if spool is not None:
        spool.start()


def _start_revert(context: CollectorContext) -> None:
    """The revert executor (respond, issue 19): Slack's Revert button and ``remediation = "automatic"`` are carried
    out where the files are, by the fs collector's process, once a label allows remediation at all."""
    fs = context.config.stage_settings("fs")
    if not fs or all(d.remediation == "off" for d in context.config.labels.definitions.values()):
        return
    from collectors.fs.revert import RevertWatcher

    group = f"permwatch-revert-{fs[0].collector_id}"
    context.run("revert", RevertWatcher(context.log, context.config, group=group))
