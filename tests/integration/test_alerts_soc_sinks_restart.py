"""``permwatch run --role alerts`` with the Teams, e-mail and syslog sinks, SIGKILLed mid-batch: each alert once.

The stage is configured from a TOML file like an operator's (secrets from the
environment and a file, the syslog CA by a path relative to the config). Teams
answers 500 while syslog and e-mail have already delivered the first
exposure; the stage is SIGKILLed before the batch is committed and started
again. The records come again: syslog and e-mail send nothing twice (the
delivery log), Teams posts the card once it answers. The close then reaches
each receiver once, as the burst's next message (a syslog line, the resolved
mail threaded on the first, "Update 1" card). No log line holds the SMTP
password or the Teams URL's signature.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerts.grouping import group_id_for
from permwatch.transport.embedded import EmbeddedBus
from tests.integration.pipeline import permwatch_exe
from tests.integration.servers.rsyslog import RsyslogServer
from tests.integration.servers.smtp import SmtpServer
from tests.integration.servers.teams import FakeTeamsWorkflow
from tests.integration.test_alerts_delivery import publish, wait_until
from tests.unit.alert_samples import closed, opened

pytestmark = pytest.mark.integration

PASSWORD = "smtp-password-must-not-leak-77aa"


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[tuple[RsyslogServer, SmtpServer, FakeTeamsWorkflow]]:
    with (
        RsyslogServer(tmp_path / "rsyslog") as rsyslog,
        SmtpServer(tmp_path / "smtp", username="permwatch", password=PASSWORD) as smtp,
        FakeTeamsWorkflow() as teams,
    ):
        yield rsyslog, smtp, teams


def test_killed_mid_batch_the_stage_delivers_each_alert_once_to_every_soc_sink(
    tmp_path: Path, receivers: tuple[RsyslogServer, SmtpServer, FakeTeamsWorkflow]
) -> None:
    rsyslog, smtp, teams = receivers
    assert rsyslog.certificate is not None and smtp.certificate is not None
    workdir = tmp_path / "pw"
    workdir.mkdir()
    (workdir / "siem-ca.pem").write_bytes(rsyslog.certificate.cert.read_bytes())
    (workdir / "smtp-password").write_text(PASSWORD + "\n")
    config = workdir / "permwatch.toml"
    config.write_text(
        f"""
log_level = "debug"
state_dir = "state"
[transport]
kind = "embedded"
[transport.embedded]
path = "events.db"
[alerts]
group = "alerts-soc"
hide_below_label = true
[[alerts.sinks]]
kind = "syslog"
host = "127.0.0.1"
port = {rsyslog.tls_port}
ca_file = "siem-ca.pem"
format = "ecs"
[[alerts.sinks]]
kind = "email"
host = "127.0.0.1"
port = {smtp.starttls_port}
ca_file = "{smtp.certificate.cert}"
username = "permwatch"
password_file = "smtp-password"
sender = "permwatch@kommun.example"
to = ["soc@kommun.example"]
[[alerts.sinks]]
kind = "teams"
url_env = "PERMWATCH_IT_TEAMS_URL"
""",
        encoding="utf-8",
    )
    log_path = workdir / "alerts.log"
    env = {**os.environ, "PERMWATCH_IT_TEAMS_URL": teams.webhook_url}
    proc: subprocess.Popen[bytes] | None = None

    def start() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [permwatch_exe(), "run", "--config", str(config), "--role", "alerts"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=tmp_path,
            )  # fmt: skip

    def kill(process: subprocess.Popen[bytes], sig: signal.Signals) -> int:
        if process.poll() is None:
            os.killpg(process.pid, sig)
        return process.wait(30)

    bus = EmbeddedBus(workdir / "events.db")
    first = opened("exp-soc", at=datetime.now(UTC), sample_paths=("/srv/share/ledning/Klient Karlsson.docx",))
    try:
        teams.fail(500, times=1000)
        proc = start()
        publish(bus, [first])
        rsyslog.wait_for(1)
        smtp.wait_for(1)
        wait_until(lambda: teams.statuses().count(500) >= 2, "Teams answering 500 to the retries")
        assert kill(proc, signal.SIGKILL) == -signal.SIGKILL
        teams.clear_failures()
        proc = start()
        teams.wait_for(1)
        publish(bus, [closed(first, after=30.0)])
        rsyslog.wait_for(2)
        smtp.wait_for(2)
        teams.wait_for(2)
        assert kill(proc, signal.SIGTERM) == 0
        proc = None
    finally:
        if proc is not None:
            kill(proc, signal.SIGKILL)
        bus.close()
    assert [r.msgid for r in rsyslog.received()] == ["EXPOSURE_OPENED", "EXPOSURE_CLOSED"]
    mails = [m.message for m in smtp.mails()]
    root = f"<{group_id_for('exp-soc')}@kommun.example>"
    assert [m["Message-ID"] for m in mails] == [root, f"<{group_id_for('exp-soc')}.resolved@kommun.example>"]
    assert mails[1]["In-Reply-To"] == root
    cards = teams.cards()
    assert len(cards) == 2 and cards[1]["body"][1]["text"].startswith("Update 1 of burst ")
    log_text = log_path.read_text(errors="replace")
    assert PASSWORD not in log_text and teams.signature not in log_text
    sent = rsyslog.received_path.read_text() + "".join(m.raw.decode() for m in smtp.mails())
    assert "Karlsson" not in sent + "".join(r.raw.decode() for r in teams.requests)
