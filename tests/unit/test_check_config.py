"""``permwatch check-config``: what ``run`` would trip on later is found now, one line each; ``--scan`` counts
the folders each label labels; ``--show-defaults`` prints every default as TOML that loads back to them."""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from alerts.registry import SINKS
from permwatch.cli import main
from permwatch.cli.settings import config_model

DIRECTORY = """\
users:
  - {name: anna, uid: 1001, gid: ledningsgrupp}
  - {name: bo, uid: 1002, gid: 2002}
groups:
  - {name: ledningsgrupp, gid: 2001, members: [anna]}
  - {name: alla, gid: 2002, members: [bo]}
"""


def write(tmp_path: Path, extra: str = "", *, allowed: str = "ledningsgrupp") -> tuple[Path, Path]:
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    (tmp_path / "directory.yaml").write_text(DIRECTORY)
    config = tmp_path / "permwatch.toml"
    config.write_text(
        f"""
state_dir = "state"
[[fs]]
roots = ["{share}"]
excludes = ["*/.snapshot"]
[directory]
path = "directory.yaml"
[labels.definitions.ledning]
allowed_groups = ["{allowed}"]
[labels.definitions.personal]
allowed_groups = ["alla"]
[[labels.rules]]
glob = "{share}/ledning"
label = "ledning"
[[labels.rules]]
glob = "{share}/hr/cases/*"
label = "personal"
[[labels.rules]]
glob = "{share}/**/archive"
label = "personal"
{extra}
"""
    )
    return config, share


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["check-config", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


def test_a_good_config_and_world_is_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _share = write(tmp_path)
    assert check(capsys, str(config)) == (0, f"{config}: ok\n", "")


def test_a_missing_directory_file_is_an_error_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _share = write(tmp_path)
    (tmp_path / "directory.yaml").unlink()
    status, _out, err = check(capsys, str(config))
    assert status == 2
    expected = f"permwatch: config error: {config}: key 'directory.path': {tmp_path / 'directory.yaml'} does not exist"
    assert err.strip() == expected


def test_a_wrong_directory_file_is_an_error_naming_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _share = write(tmp_path)
    directory = tmp_path / "directory.yaml"
    directory.write_text(DIRECTORY.replace("members: [bo]}", "members: [bo], groups: [anna]}"))
    status, _out, err = check(capsys, str(config))
    assert status == 2
    assert err.strip() == (
        f"permwatch: config error: {directory}:6: key 'groups.1.groups.0': 'anna' is a user, not a group:"
        " list users under `members`"
    )


def test_a_group_under_members_is_a_warning_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _share = write(tmp_path)
    directory = tmp_path / "directory.yaml"
    directory.write_text(DIRECTORY.replace("members: [anna]}", "members: [anna, alla]}"))
    status, out, err = check(capsys, str(config))
    assert (status, out) == (0, f"{config}: ok (1 warning)\n")
    assert err == (
        f"permwatch: warning: {directory}:5: key 'groups.0.members.1': 'alla' is a group: nested into"
        " 'ledningsgrupp' as if listed under its `groups`\n"
    )


def test_roots_must_exist_and_be_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, share = write(tmp_path)
    text = config.read_text()
    config.write_text(text.replace(f'roots = ["{share}"]', f'roots = ["{share}", "{tmp_path}/gone", "{config}"]'))
    status, _out, err = check(capsys, str(config))
    assert status == 2
    assert err.splitlines() == [
        f"permwatch: config error: {config}: key 'fs.0.roots.1': {tmp_path}/gone does not exist",
        f"{config}: key 'fs.0.roots.2': {config} is not a directory",
    ]


def test_an_unknown_acl_reader_is_named_with_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, share = write(tmp_path)
    text = config.read_text()
    config.write_text(text.replace(f'roots = ["{share}"]', f'roots = ["{share}"]\nacl_reader = "nfs4"'))
    status, _out, err = check(capsys, str(config))
    assert status == 2
    assert err.splitlines() == [
        f"permwatch: config error: {config}: key 'fs.0.acl_reader': 'nfs4' names no ACL reader (known: ntacl, posix)"
    ]


def test_acl_reader_options_the_reader_refuses_are_named_with_their_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, share = write(tmp_path)
    text = config.read_text()
    options = 'acl_reader = "ntacl"\nacl_reader_options = { xattr_name = "NTACL" }'
    config.write_text(text.replace(f'roots = ["{share}"]', f'roots = ["{share}"]\n{options}'))
    status, _out, err = check(capsys, str(config))
    assert status == 2
    assert err.splitlines() == [
        f"permwatch: config error: {config}: key 'fs.0.acl_reader_options': "
        "xattr_name 'NTACL' is not an xattr name like security.NTACL"
    ]


def test_names_a_label_allows_that_the_directory_lacks_are_warnings_with_the_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _share = write(tmp_path, "[labels]\nalways_allowed_users = ['root', 'backup']\n", allowed="ledningsgrup")
    status, out, err = check(capsys, str(config))
    assert (status, out) == (0, f"{config}: ok (3 warnings)\n")
    directory = tmp_path / "directory.yaml"
    assert err.splitlines() == [
        f"permwatch: warning: {config}: key 'labels.definitions.ledning.allowed_groups': group 'ledningsgrup'"
        f" is not in the directory file {directory}, so it allows nobody",
        f"permwatch: warning: {config}: key 'labels.always_allowed_users': user 'root'"
        f" is not in the directory file {directory}, so it allows nobody",
        f"permwatch: warning: {config}: key 'labels.always_allowed_users': user 'backup'"
        f" is not in the directory file {directory}, so it allows nobody",
    ]


def test_an_unreadable_ldap_password_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ldap = f"""
[[ldap]]
uri = "ldap://127.0.0.1:1"
bind_dn = "cn=permwatch"
password_file = "{tmp_path}/ldap.password"
user_base = "ou=people"
group_base = "ou=groups"
"""
    config, _share = write(tmp_path, ldap)
    status, _out, err = check(capsys, str(config))
    assert status == 2
    assert err.strip() == (
        f"permwatch: config error: {config}: key 'ldap.0.password_file': cannot read {tmp_path}/ldap.password:"
        " No such file or directory"
    )


def test_scan_counts_the_folders_each_label_and_rule_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, share = write(tmp_path)
    for folder in ("ledning/2025", "hr/cases/a/deeper", "hr/cases/b", "hr/.snapshot/archive", "misc/marked"):
        (share / folder).mkdir(parents=True)
    (share / "misc" / "marked" / ".sensitivity").write_text("ledning\n")
    status, out, err = check(capsys, "--scan", str(config))
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "label 'ledning': 2 folders",  # the rule's folder and the marked one; 2025 is covered, not labelled
        "label 'personal': 2 folders",  # cases/a and cases/b, not cases/a/deeper: * stays in one component
        f"rule labels.rules.2 (glob '{share}/**/archive', label 'personal') matches no folder",  # excluded
        f"{config}: ok",
    ]


def test_show_defaults_prints_toml_that_loads_back_to_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = check(capsys, "--show-defaults")
    assert (status, err) == (0, "")
    model = config_model()  # the core's tables and every collector's
    assert model.model_validate(tomllib.loads(out)) == model()
    assert 'always_allowed_users = ["root"]' in out
    assert "Setting the key replaces the default: list root to keep it; [] allows nobody extra" in out
    for table in ("[transport.kafka]", "[[fs]]", "[directory]", "[[ldap]]", "[[labels.rules]]"):
        assert f"# {table}\n" in out  # optional sections, shown commented out
    assert '# kind = "slack"' in out and "# roots = <required>" in out


def shown_keys(out: str) -> set[str]:
    """Every table and key the TOML text shows, live or commented out, by dotted path."""
    shown: set[str] = set()
    table = ""
    for line in out.splitlines():
        text = line.removeprefix("# ")
        if text.startswith("["):
            table = text.strip().strip("[]")
            shown.add(table)
            continue
        key, eq, _ = text.partition(" = ")
        if eq and key.isidentifier():
            shown.add(f"{table}.{key}" if table else key)
    return shown


def tables_in(annotation: Any, named: bool = False) -> list[tuple[type[BaseModel], bool]]:
    """The models a field's type holds (a model, an optional one, a list of them, a dict of them by name)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, named)]
    by_name = typing.get_origin(annotation) is dict
    args = typing.get_args(annotation)[1:] if by_name else typing.get_args(annotation)
    return [found for arg in args for found in tables_in(arg, named or by_name)]


def every_key(model: type[BaseModel], prefix: str) -> Iterator[str]:
    """The dotted path of every field of ``model`` and of the models it holds (``<name>`` for a dict's keys)."""
    for name, info in model.model_fields.items():
        if info.exclude:
            continue  # refused keys (a literal password): never a setting
        path = f"{prefix}.{name}" if prefix else name
        held = tables_in(info.annotation)
        if not held:
            yield path
        for inner, named in held:
            table = f"{path}.<name>" if named else path
            yield table
            yield from every_key(inner, table)


def test_show_defaults_shows_every_key_of_every_model_and_sink(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _err = check(capsys, "--show-defaults")
    assert status == 0
    expected = set(every_key(config_model(), ""))
    for sink_model, _factory in SINKS.values():
        expected |= set(every_key(sink_model, "alerts.sinks"))
    # the ones the audit found missing, named so that a walker that found nothing could not pass
    assert {
        "labels.definitions.<name>.personal_data.data_categories",
        "breach_report.controller.name",
        "breach_report.dpo.email",
        "alerts.sinks.routes.channel",
        "transport.kafka.bootstrap_servers",
    } <= expected
    assert len(expected) > 150
    assert sorted(expected - shown_keys(out)) == []


def test_check_config_needs_a_file_unless_showing_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert check(capsys)[0] == 2


def test_a_missing_kafka_certificate_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kafka = '[transport]\nkind = "kafka"\n[transport.kafka]\nbootstrap_servers = "127.0.0.1:9093"\n'
    config, _share = write(tmp_path, kafka + 'security_protocol = "SSL"\nssl_ca_file = "ca.pem"\n')
    status, _out, err = check(capsys, str(config))
    assert status == 2
    assert err.strip() == (
        f"permwatch: config error: {config}: key 'transport.kafka.ssl_ca_file': {tmp_path / 'ca.pem'} does not exist"
    )


SMB = """
[[smb]]
server = "files.example"
share = "data"
username = "svc"
password_file = "smb-password"
path_prefix = "/smb/files/data"
"""
SYSLOG = """
[[alerts.sinks]]
kind = "console"
[[alerts.sinks]]
kind = "syslog"
host = "siem.example"
ca_file = "siem.pem"
"""
EMAIL = """
[[alerts.sinks]]
kind = "email"
host = "smtp.example"
sender = "permwatch@example.org"
to = ["soc@example.org"]
username = "permwatch"
password_file = "smtp-password"
"""


@pytest.mark.parametrize(
    ("extra", "key", "file", "says"),
    [
        (SMB, "smb.0.password_file", "smb-password", "cannot read password_file {file}: No such file or directory"),
        (SYSLOG, "alerts.sinks.1.ca_file", "siem.pem", "{file} does not exist"),
        (EMAIL, "alerts.sinks.0.password_file", "smtp-password", "Value error, cannot read {file}: No such file"),
    ],
    ids=["smb-password", "syslog-ca", "email-password"],
)
def test_a_file_an_smb_share_or_a_sink_reads_is_an_error_naming_its_key_until_it_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, key: str, file: str, says: str
) -> None:
    config, _share = write(tmp_path, extra)
    status, _out, err = check(capsys, str(config))
    assert status == 2
    expected = f"permwatch: config error: {config}: key '{key}': " + says.format(file=tmp_path / file)
    assert err.strip().startswith(expected), err
    assert len(err.strip().splitlines()) == 1
    (tmp_path / file).write_text("a secret or a certificate\n")
    status, out, err = check(capsys, str(config))
    assert (status, out.splitlines()[-1], err) == (0, f"{config}: ok", "")


def test_what_the_example_config_calls_a_default_is_the_default() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "permwatch.example.toml"
    defaults = tomllib.loads(main_defaults())
    table: list[str] = []
    claimed = 0
    for line in example.read_text().splitlines():
        if line.startswith("["):
            table = line.strip("[] ").split(".")
            continue
        key, eq, rest = line.partition(" = ")
        value, _hash, comment = rest.partition("#")
        says_default = "(default)" in comment or comment.strip().startswith("default;")  # not "default: <other>"
        if not eq or line.startswith("#") or not says_default:
            continue
        node: object = defaults
        for part in table:
            assert isinstance(node, dict)
            node = node[part][0] if isinstance(node[part], list) else node[part]
        assert isinstance(node, dict)
        assert tomllib.loads(f"v = {value}")["v"] == node[key.strip()], line
        claimed += 1
    assert claimed >= 6


def main_defaults() -> str:
    from permwatch.cli.defaults import render_defaults

    return render_defaults()


def test_a_folder_the_scan_cannot_list_is_said_not_skipped(tmp_path: Path) -> None:
    from permwatch.cli.checks import scan_labels
    from permwatch.cli.settings import load_config

    config_path, share = write(tmp_path)
    config = load_config(config_path, environ={})
    share.rmdir()  # gone between the check and the scan: os.walk would pass over it without a word
    assert scan_labels(config).unread == [
        f"cannot list {share}: No such file or directory; the folders below it are not counted"
    ]


def test_a_state_dir_run_cannot_create_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, _share = write(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config.write_text(config.read_text().replace('state_dir = "state"', f'state_dir = "{blocker}/state"'))
    status, _out, err = check(capsys, str(config))
    assert status == 2
    assert err.splitlines() == [
        f"permwatch: config error: {config}: key 'state_dir': {blocker} is not a directory",
        f"{config}: key 'transport.embedded.path': {blocker} is not a directory",
    ]
    status = main(["run", "--config", str(config)])
    assert status == 2 and "Traceback" not in capsys.readouterr().err  # run refuses the same way


def test_a_group_named_like_a_user_is_still_a_group(tmp_path: Path) -> None:
    from permwatch.cli.checks import run_warnings
    from permwatch.cli.settings import load_config

    config_path, _share = write(tmp_path, allowed="anna")  # a user private group of the same name
    config = load_config(config_path, environ={})
    assert run_warnings(config, config_path) == [
        f"{config_path}: key 'labels.definitions.ledning.allowed_groups': group 'anna' is not in the directory"
        f" file {tmp_path / 'directory.yaml'}, so it allows nobody"
    ]
    (tmp_path / "directory.yaml").write_text(DIRECTORY + "  - {name: anna, gid: 2100}\n")
    assert run_warnings(config, config_path) == []
