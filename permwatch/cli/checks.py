"""What ``permwatch check-config`` checks beyond the config's own validation: the world the config points at.

``run`` would trip later on a directory file that is missing or wrong, a watched root that is not there, a state
directory it cannot write, an LDAP or SMB password, a Kafka certificate or a sink's file (a CA bundle, a secret)
that cannot be read; :func:`check_world` finds
these first, each as one line naming the config file and the key (or the directory file and its line). Names a
label allows that the directory file lacks are warnings naming the name: a typo there silently allows nobody.
:func:`scan_labels` (``--scan``) walks the watched trees as the filesystem collector would and counts the folders
each label and each rule gives a label to, so a glob that matches nothing is seen before it is relied on.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from permwatch.config import Config
from permwatch.events import DirectoryGroup, DirectoryUser
from permwatch.secret import SecretUnavailable, read_secret

if TYPE_CHECKING:
    from collectors.directory_diff import PrincipalStates


@dataclass
class Findings:
    """One line each: errors stop ``run`` (or would later), warnings are worth a look."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_world(config: Config, path: Path, environ: dict[str, str] | None = None) -> Findings:
    from collectors.acl import NameCache
    from collectors.directory_file import DirectoryFileError, parse_directory
    from collectors.fs.readers import ACL_READERS, UnknownAclReaderError, acl_reader_named

    found = Findings(errors=state_problems(config, path))
    for i, fs in enumerate(config.stage_settings("fs")):
        for j, root in enumerate(fs.roots):
            if not root.exists():
                found.errors.append(f"{path}: key 'fs.{i}.roots.{j}': {root} does not exist")
            elif not root.is_dir():
                found.errors.append(f"{path}: key 'fs.{i}.roots.{j}': {root} is not a directory")
        if fs.acl_reader not in ACL_READERS:
            known = ", ".join(sorted(ACL_READERS))
            found.errors.append(
                f"{path}: key 'fs.{i}.acl_reader': {fs.acl_reader!r} names no ACL reader (known: {known})"
            )
        else:
            try:
                acl_reader_named(fs.acl_reader, NameCache(), fs.acl_reader_options)
            except UnknownAclReaderError as exc:
                found.errors.append(f"{path}: key 'fs.{i}.acl_reader_options': {str(exc).split(': ', 1)[-1]}")
    for directory_settings in config.stage_settings("directory"):
        directory = directory_settings.path
        if not directory.exists():
            found.errors.append(f"{path}: key 'directory.path': {directory} does not exist")
        else:
            try:
                parsed = parse_directory(directory)
            except DirectoryFileError as exc:
                found.errors.append(str(exc))
            else:
                found.warnings.extend(parsed.notes)
                found.warnings.extend(unknown_principals(config, path, parsed.states))
    for i, ldap in enumerate(config.stage_settings("ldap")):
        if ldap.bind_dn is not None:
            try:
                read_secret(f"ldap.{i}.password", file=ldap.password_file, env=ldap.password_env, environ=environ)
            except SecretUnavailable as exc:
                found.errors.append(f"{path}: {exc}")
        if ldap.ca_file is not None and not ldap.ca_file.is_file():
            found.errors.append(f"{path}: key 'ldap.{i}.ca_file': {ldap.ca_file} does not exist")
    found.errors += smb_and_sink_problems(config, path)
    kafka = config.transport.kafka
    if config.transport.kind in ("kafka", "confluent") and kafka is not None:
        for key in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
            file = getattr(kafka, key)
            if file is not None and not file.is_file():
                found.errors.append(f"{path}: key 'transport.kafka.{key}': {file} does not exist")
    return found


def smb_and_sink_problems(config: Config, path: Path) -> list[str]:
    """Files an ``[[smb]]`` share or a sink reads when it starts: the SMB password, read as the collector will,
    and every ``*_file`` setting of a sink (a CA bundle, a token or a key), which must be a readable file."""
    from alerts.registry import SINKS

    problems = []
    for i, smb in enumerate(config.stage_settings("smb")):
        try:
            smb.password()
        except ValueError as exc:
            key = "password_env" if smb.password_env is not None else "password_file"
            problems.append(f"{path}: key 'smb.{i}.{key}': {exc}")
    for i, sink in enumerate(config.alerts.sinks):
        if sink.kind not in SINKS:
            continue  # validate_stages says so
        settings = sink.model_dump()
        for name in SINKS[sink.kind][0].model_fields:
            file = settings.get(name)
            if name.endswith("_file") and file is not None and not Path(file).is_file():
                problems.append(f"{path}: key 'alerts.sinks.{i}.{name}': {file} does not exist")
    return problems


def run_warnings(config: Config, path: Path) -> list[str]:
    """What ``run`` logs at start of what check-config warns about: label names the directory file lacks."""
    from collectors.directory_file import DirectoryFileError, parse_directory

    if not config.stage_settings("directory"):
        return []
    try:
        parsed = parse_directory(config.stage_settings("directory")[0].path)
    except DirectoryFileError:
        return []  # the directory collector refuses it, with its line, when it starts
    return unknown_principals(config, path, parsed.states)


def state_problems(config: Config, path: Path) -> list[str]:
    """Where ``run`` writes its state and (embedded) event log: checked by ``run`` itself too, before it starts."""
    problems = _writable_dir(path, "state_dir", config.state_dir)
    if config.transport.kind == "embedded":
        problems += _writable_dir(path, "transport.embedded.path", config.transport.embedded.path.parent)
    return problems


def _writable_dir(path: Path, key: str, folder: Path) -> list[str]:
    """``run`` creates ``folder`` and writes in it: it must be a writable folder, or one it can create."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [f"{path}: key '{key}': {existing} is not a directory"]
    if not os.access(existing, os.W_OK | os.X_OK):
        made = "" if existing == folder else f" (to create {folder})"
        return [f"{path}: key '{key}': {existing} is not writable by this user{made}"]
    return []


def unknown_principals(config: Config, path: Path, states: PrincipalStates) -> list[str]:
    """One warning per group or user a label allows that the directory file lacks (none with LDAP beside it,
    which may know them): such a name allows nobody, and a typo in it goes unnoticed otherwise."""
    if not config.stage_settings("directory") or config.stage_settings("ldap"):
        return []
    users = {s.name for s in states.values() if isinstance(s, DirectoryUser)}
    groups = {s.name for s in states.values() if isinstance(s, DirectoryGroup)}
    where = f"is not in the directory file {config.stage_settings('directory')[0].path}"
    labels = config.labels
    named: list[tuple[str, str, list[str], set[str]]] = []
    for name, definition in labels.definitions.items():
        named.append((f"labels.definitions.{name}.allowed_groups", "group", definition.allowed_groups, groups))
        named.append((f"labels.definitions.{name}.allowed_users", "user", definition.allowed_users, users))
    named.append(("labels.always_allowed_groups", "group", labels.always_allowed_groups, groups))
    if "always_allowed_users" in labels.model_fields_set:  # root, the default, is a local account
        named.append(("labels.always_allowed_users", "user", labels.always_allowed_users, users))
    return [
        f"{path}: key '{key}': {kind} {name!r} {where}, so it allows nobody"
        for key, kind, names, known in named
        for name in names
        if name not in known
    ]


@dataclass
class LabelCounts:
    """How many folders of the current tree each label and each policy rule labels."""

    by_label: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[int] = field(default_factory=Counter)
    """Rule index → folders its glob matches (a folder an earlier rule, an xattr or a marker labels included)."""
    unread: list[str] = field(default_factory=list)
    """Folders the scan could not list, one line each: what is below them is not counted."""


def scan_labels(config: Config) -> LabelCounts:
    """Walk every watched root (excludes applied) and label each folder as the filesystem collector would."""
    from collectors.fs.read import PathExcluder
    from collectors.labels import LabelPolicy, path_glob_matches

    policy = LabelPolicy(config.labels)
    counts = LabelCounts()

    def unreadable(exc: OSError) -> None:
        counts.unread.append(f"cannot list {exc.filename}: {exc.strerror}; the folders below it are not counted")

    for fs in config.stage_settings("fs"):
        excluder = PathExcluder(fs.excludes)
        for root in fs.roots:
            for current, dirs, _files in os.walk(root, onerror=unreadable):
                dirs[:] = [d for d in dirs if not excluder.excludes(os.path.join(current, d), d)]
                label, _origin = policy.label_for(current)
                if label is not None:
                    counts.by_label[label.name] += 1
                for i, rule in enumerate(config.labels.rules):
                    if path_glob_matches(current, rule.glob):
                        counts.by_rule[i] += 1
    return counts


def describe_counts(config: Config, counts: LabelCounts) -> list[str]:
    """The ``--scan`` report: one line per label (defined ones first), then rules that match no folder."""
    lines = []
    names = list(config.labels.definitions) + sorted(set(counts.by_label) - set(config.labels.definitions))
    for name in names:
        n = counts.by_label[name]
        undefined = "" if name in config.labels.definitions else " (named by an xattr or marker, not defined)"
        lines.append(f"label {name!r}: {n} folder{'' if n == 1 else 's'}{undefined}")
    for i, rule in enumerate(config.labels.rules):
        if counts.by_rule[i] == 0:
            lines.append(f"rule labels.rules.{i} (glob {rule.glob!r}, label {rule.label!r}) matches no folder")
    return lines
