"""Config loading: validation errors name the file and the key, env overrides, relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from permwatch.cli import main
from permwatch.cli.settings import load_config
from permwatch.config import ConfigError, TransportConfig

GOOD = """
state_dir = "state"
[transport]
kind = "embedded"
[transport.embedded]
path = "events.db"
[[fs]]
roots = ["/srv/share"]
[labels.definitions.ledning]
allowed_groups = ["ledningsgrupp"]
[[labels.rules]]
glob = "/srv/share/ledning"
label = "ledning"
[[alerts.sinks]]
kind = "jsonl"
path = "alerts.jsonl"
"""


def test_good_config_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "permwatch.toml"
    path.write_text(GOOD)
    config = load_config(path, environ={})
    assert config.transport.embedded.path == tmp_path / "events.db"
    assert config.state_dir == tmp_path / "state"
    assert config.alerts.sinks[0].model_extra == {"path": str(tmp_path / "alerts.jsonl")}


def test_the_event_log_lives_under_the_state_dir_by_default(tmp_path: Path) -> None:
    path = tmp_path / "permwatch.toml"
    path.write_text('state_dir = "state"\n')
    assert load_config(path, environ={}).transport.embedded.path == tmp_path / "state" / "events.db"
    path.write_text('state_dir = "state"\n[transport]\nkind = "embedded"\n')
    assert load_config(path, environ={}).transport.embedded.path == tmp_path / "state" / "events.db"
    assert TransportConfig().embedded.path == Path("events.db")  # the shared default is left as it was


def test_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "permwatch.toml"
    path.write_text(GOOD)
    env = {
        "PERMWATCH__TRANSPORT__KIND": "kafka",
        "PERMWATCH__TRANSPORT__KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "PERMWATCH__PROCESSOR__BATCH_MAX": "100",
    }
    config = load_config(path, environ=env)
    assert config.transport.kind == "kafka"
    assert config.transport.kafka is not None and config.transport.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.processor.batch_max == 100


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[transport]\nkind = "carrier-pigeon"\n', "key 'transport.kind'"),
        ('[[fs]]\nroots = ["relative/path"]\n', "key 'fs.0.roots'"),
        ("[processor]\nbatch_maxx = 3\n", "key 'processor.batch_maxx': unknown key"),
        ("[[labels.rules]]\nglob = '/x'\nlabel = 'nope'\n", "key 'labels.rules.0.label'"),
        ("this is = = not toml", "not valid TOML"),
        (
            "[processor]\npartitioned = true\n",
            "key 'processor.partitioned': needs transport.kind = 'kafka' or 'confluent'",
        ),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(path) in str(err.value)
    assert expected in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_a_bad_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "permwatch.toml"
    path.write_text("[processor]\nbatch_max = 100\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={"PERMWATCH__PROCESSOR__BATCH_MAX": "many"})
    assert str(err.value).startswith(
        f"{path}: key 'processor.batch_max' (set by environment variable PERMWATCH__PROCESSOR__BATCH_MAX): "
    )
    assert len(str(err.value).splitlines()) == 1


def test_check_config_cli_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[alerts.sinks]]\nkind = "pager"\n')
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{path}: key 'alerts.sinks.0.kind': unknown sink 'pager'" in err
    good = tmp_path / "good.toml"
    (tmp_path / "share").mkdir()
    good.write_text(GOOD.replace("/srv/share", str(tmp_path / "share")))
    assert main(["check-config", str(good)]) == 0


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("glob", "expected"),
    [
        ("ledning", "must be an absolute path glob (start with / or **), or it matches nothing: 'ledning'"),
        ("*/ledning", "must be an absolute path glob"),
        ("/srv/share/ledning/", "folder paths have no trailing slash"),
    ],
)
def test_a_glob_that_can_match_no_folder_is_refused(tmp_path: Path, glob: str, expected: str) -> None:
    path = tmp_path / "permwatch.toml"
    path.write_text(f"[labels.definitions.l]\n[[labels.rules]]\nglob = '{glob}'\nlabel = 'l'\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(err.value).startswith(f"{path}: key 'labels.rules.0.glob': ")
    assert expected in str(err.value) and len(str(err.value).splitlines()) == 1


def test_the_glob_semantics_are_as_documented() -> None:
    from collectors.labels import path_glob_matches

    assert path_glob_matches("/srv/share/hr/cases/a", "/srv/share/hr/cases/*")
    assert not path_glob_matches("/srv/share/hr/cases/a/b", "/srv/share/hr/cases/*")  # * stays in one component
    assert not path_glob_matches("/srv/share/hr/cases", "/srv/share/hr/cases/*")
    assert path_glob_matches("/srv/share/a/b/ledning", "/srv/share/**/ledning")  # ** crosses components
    assert path_glob_matches("/srv/share/x/ledning", "**/ledning")


def test_always_allowed_users_defaults_to_root_and_setting_it_replaces_that(tmp_path: Path) -> None:
    path = tmp_path / "permwatch.toml"
    path.write_text("")
    assert load_config(path, environ={}).labels.always_allowed_users == ["root"]
    path.write_text("[labels]\nalways_allowed_users = []\n")
    assert load_config(path, environ={}).labels.always_allowed_users == []
    path.write_text("[labels]\nalways_allowed_users = ['backup']\n")
    assert load_config(path, environ={}).labels.always_allowed_users == ["backup"]
