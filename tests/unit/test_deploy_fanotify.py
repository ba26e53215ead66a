"""The attributed collector's systemd unit and example configuration (deploy/, issue #18)."""

from __future__ import annotations

from pathlib import Path

from permwatch.cli.settings import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def unit_values(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = ""
    for line in (DEPLOY / "systemd" / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key}", []).append(value)
    return values


def test_the_fanotify_collector_runs_apart_with_only_the_capabilities_fanotify_needs() -> None:
    values = unit_values("permwatch-fs-fanotify.service")
    assert values["Service.ExecStart"] == [
        "/opt/permwatch/venv/bin/permwatch run --config /etc/permwatch/fanotify.toml --role collector"
    ]
    assert values["Service.User"] == ["permwatch"]
    assert values["Service.AmbientCapabilities"] == ["CAP_SYS_ADMIN CAP_DAC_READ_SEARCH"]
    assert values["Service.CapabilityBoundingSet"] == ["CAP_SYS_ADMIN CAP_DAC_READ_SEARCH"]
    assert values["Service.NoNewPrivileges"] == ["yes"]
    assert "Service.ProtectProc" not in values  # it reads other users' /proc/<pid>/status
    main = unit_values("permwatch-collector.service")
    assert main["Service.CapabilityBoundingSet"] == ["CAP_DAC_READ_SEARCH"]  # the main collector stays without
    listens = {
        e
        for name in (
            "permwatch-fs-fanotify.service",
            "permwatch-collector.service",
            "permwatch-processor.service",
            "permwatch-alerts.service",
        )
        for e in unit_values(name)["Service.Environment"]
        if e.startswith("PERMWATCH__METRICS__LISTEN")
    }
    assert len(listens) == 4


def test_the_example_configuration_loads_with_attribution_opens_and_personal_data() -> None:
    config = load_config(DEPLOY / "permwatch-fanotify.example.toml", environ={})
    (fs,) = config.fs
    assert (fs.actors, fs.opens) == ("fanotify", "fanotify")
    assert config.directory is None and config.ldap == []
    facts = config.labels.definitions["ledning"].personal_data
    assert facts is not None and facts.approx_subjects == 40


def test_an_unknown_actor_or_open_source_is_one_line_naming_key_and_file(tmp_path: Path) -> None:
    import pytest

    from permwatch.cli.wiring import validate_stages
    from permwatch.config import ConfigError

    config_path = tmp_path / "permwatch.toml"
    config_path.write_text(
        f'[[fs]]\nroots = ["{tmp_path}"]\nactors = "fanotfy"\n[[fs]]\ncollector_id = "b"\nroots = ["{tmp_path}"]\n'
        'opens = "fanotify,smb_audit"\n'
    )
    with pytest.raises(ConfigError) as refused:
        validate_stages(load_config(config_path, environ={}), config_path)
    assert str(refused.value).splitlines() == [
        f"{config_path}: key 'fs.0.actors': 'fanotfy' names no source (known: audit, fanotify, none, smb_audit)",
        f"{config_path}: key 'fs.1.smb_audit_log': required when opens names smb_audit",
    ]


def test_a_relative_smb_audit_log_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config_path = tmp_path / "permwatch.toml"
    config_path.write_text(f'[[fs]]\nroots = ["{tmp_path}"]\nactors = "smb_audit"\nsmb_audit_log = "audit/smb.log"\n')
    (fs,) = load_config(config_path, environ={}).stage_settings("fs")
    assert fs.smb_audit_log == tmp_path / "audit" / "smb.log"
