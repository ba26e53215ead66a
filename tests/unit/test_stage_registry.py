"""The core knows no stage (issue 15): collectors type their own config tables and name them in the collector
registry, the CLI hands those to the core's loader, and each stage declares its own metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from collectors.directory_settings import DirectoryFileConfig
from collectors.fs.settings import FsCollectorConfig
from collectors.ldap_settings import LdapCollectorConfig
from collectors.metrics import CollectorMetrics
from collectors.registry import COLLECTORS, SECTIONS
from collectors.smb.settings import SmbCollectorConfig
from permwatch.cli.settings import load_config
from permwatch.config import ConfigError
from permwatch.config import load_config as load_core_config
from permwatch.metrics import Metrics

CORE = (
    "permwatch.config",
    "permwatch.events",
    "permwatch.keys",
    "permwatch.wire",
    "permwatch.metrics",
    "permwatch.deadletter",
    "permwatch.transport",
    "permwatch.transport.base",
    "permwatch.transport.embedded",
    "permwatch.transport.kafka",
    "permwatch.transport.confluent",
)


def test_the_core_imports_no_stage() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('collectors', 'processor', 'alerts')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_every_collector_table_is_typed_by_its_collector() -> None:
    # the directory first: permissions name its principals
    assert list(COLLECTORS) == ["directory", "ldap", "fs", "smb"]
    assert {name: section.model for name, section in SECTIONS.items() if name in COLLECTORS} == {
        "directory": DirectoryFileConfig,
        "ldap": LdapCollectorConfig,
        "fs": FsCollectorConfig,
        "smb": SmbCollectorConfig,
    }


def test_a_collector_table_is_validated_by_its_model_and_errors_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "permwatch.toml"
    path.write_text('[[fs]]\nroots = ["/srv/share"]\nwatch = "sometimes"\nstate_path = "fs.db"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: key 'fs.0.watch': Input should be a valid boolean, unable to interpret input"
    path.write_text('[[fs]]\nroots = ["/srv/share"]\nstate_path = "fs.db"\n', encoding="utf-8")
    [fs] = load_config(path).stage_settings("fs")
    assert isinstance(fs, FsCollectorConfig)
    assert fs.state_path == tmp_path / "fs.db"  # relative to the file, as the registry's paths say
    # the core alone knows no collector: the same table is an unknown key to it
    with pytest.raises(ConfigError, match=r"key 'fs': unknown key"):
        load_core_config(path)


def test_a_stage_metrics_part_is_registered_once_on_its_registry() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    assert registry.get_sample_value("permwatch_spool_drained_total") is None
    part = metrics.part(CollectorMetrics)
    assert metrics.part(CollectorMetrics) is part
    part.spool_drained.inc(3)
    assert registry.get_sample_value("permwatch_spool_drained_total") == 3


def test_an_smb_table_is_read_with_its_password_file_relative_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "permwatch.toml"
    path.write_text(
        '[[smb]]\nserver = "fs1"\nshare = "social"\nusername = "svc"\npassword_file = "smb.pw"\n'
        'path_prefix = "/smb/fs1/social"\n',
        encoding="utf-8",
    )
    [smb] = load_config(path).stage_settings("smb")
    assert isinstance(smb, SmbCollectorConfig) and smb.password_file == tmp_path / "smb.pw"
    path.write_text('[[smb]]\nserver = "fs1"\nshare = "a/b"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: key 'smb.0.")
