"""deploy/ checked by the real tools: promtool (Debian's prometheus package) and systemd-analyze."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy_exprs import DEPLOY

pytestmark = pytest.mark.integration

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
UNIT_EXEC = "/opt/permwatch/venv/bin/permwatch"


def run(*command: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_config() -> None:
    result = run(PROMTOOL, "check", "config", "prometheus/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_check_rules() -> None:
    result = run(PROMTOOL, "check", "rules", "prometheus/rules/permwatch.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    """Each alert fires on made-up series when it should, with the labels and text it should."""
    result = run(PROMTOOL, "test", "rules", "prometheus/tests/permwatch_rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` insists ExecStart exists: the copies point at this checkout's permwatch."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (tests/unit/test_deploy.py checks the units' structure)")
    permwatch = Path(sys.executable).parent / "permwatch"
    copies = []
    for unit in sorted((DEPLOY / "systemd").glob("permwatch-*.service")):
        text = unit.read_text(encoding="utf-8")
        assert UNIT_EXEC in text, unit.name
        copy = tmp_path / unit.name
        copy.write_text(text.replace(UNIT_EXEC, str(permwatch)), encoding="utf-8")
        copies.append(str(copy))
    # collector, processor, alerts, the fanotify collector apart (issue 18), the workshop store (issue 21)
    assert len(copies) == 5
    timer = DEPLOY / "systemd" / "permwatch-snapshot.timer"
    (tmp_path / timer.name).write_text(timer.read_text(encoding="utf-8"), encoding="utf-8")
    copies.append(str(tmp_path / timer.name))
    result = run(analyze, "verify", *copies, cwd=tmp_path)
    # verify exits 0 on unknown keys and bad values too, and only says so on stderr.
    assert result.returncode == 0 and result.stderr == "", result.stderr
