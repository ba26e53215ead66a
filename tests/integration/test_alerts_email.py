"""The e-mail sink against a real SMTP server (aiosmtpd): STARTTLS or implicit TLS, AUTH, threads, retries, digest.

- Over STARTTLS with AUTH, a burst's opening, a change and the close are three
  mails in one thread (Message-ID / In-Reply-To / References from the burst
  id), each multipart/alternative (text and HTML); the stage started again with
  its consumer position lost mails nothing twice; the password, file names
  below the labelled folder and the names of people who can read appear in no
  mail and no log line; every mail holds only allowed headers, words and values
  (``alert_allowlist``), with ``actor = "omit"`` no user name at all.
- Over implicit TLS: ``451`` answers are retried until the mail is accepted
  once; a ``554`` is permanent (dead-lettered, not retried); a server that is
  down is retried until it is up; a wrong password is permanent.
- A folder's opening and a later change of it in one update (a restart's
  backlog) are mailed as the burst widening by that folder, as it is now.
- Digest mode, two labels: each label's first mail goes at once; what follows
  within its window is held and mailed as one digest per label once the whole
  window is over (by the dispatcher's maintenance), and nothing more in the
  window after.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from alerts.base import SinkContext
from alerts.dispatch import DeliveryLog, Dispatcher
from alerts.grouping import group_id_for
from alerts.registry import build_sink
from permwatch.events import Label, Severity
from permwatch.transport.embedded import EmbeddedBus
from tests.integration.alert_allowlist import allowed_values, mail_problems
from tests.integration.servers.smtp import SmtpServer
from tests.integration.test_alerts_delivery import (
    RunningDispatcher,
    deliver_an_opening_with_its_later_change,
    publish,
    wait_until,
)
from tests.integration.test_alerts_syslog import caught_up
from tests.unit.alert_samples import case_burst, changed, closed, opened

pytestmark = pytest.mark.integration

USER = "permwatch"
PASSWORD = "smtp-password-must-not-leak-3c1d"
PASSWORD_ENV = "PERMWATCH_IT_SMTP_PASSWORD"


@pytest.fixture
def smtp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    with SmtpServer(tmp_path / "smtp", username=USER, password=PASSWORD) as server:
        yield server


def settings(smtp: SmtpServer, **extra: Any) -> dict[str, Any]:
    assert smtp.certificate is not None
    return {
        "kind": "email",
        "host": "127.0.0.1",
        "port": smtp.starttls_port,
        "security": "starttls",
        "ca_file": str(smtp.certificate.cert),
        "username": USER,
        "password_env": PASSWORD_ENV,
        "sender": "permwatch@kommun.example",
        "to": ["soc@kommun.example", "it-sakerhet@kommun.example"],
        "timeout_seconds": 10,
        **extra,
    }


def test_a_burst_is_one_thread_of_three_mails_over_starttls_and_never_mailed_twice(
    tmp_path: Path, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="permwatch")  # the SMTP server's own log is not ours
    now = datetime.now(UTC).replace(microsecond=0)
    burst = [
        opened(
            e.exposure_id, folder=e.folder, label=e.label, at=e.opened_at, causes=("fs-burst",), people=40,
            sample_paths=(e.folder, e.folder + "/Klient Karlsson.docx"), users=("anna.svensson",),
        )
        for e in case_burst(2, at=now)
    ]  # fmt: skip
    bus = EmbeddedBus(tmp_path / "events.db")
    delivery_log = DeliveryLog(tmp_path / "alerts.db")
    config = settings(smtp, hide_below_label=True, actor="omit")
    try:
        sink = build_sink(config, SinkContext(database=delivery_log.database))
        dispatcher = Dispatcher(bus, [sink], delivery_log, group="mail-1", backoff_initial=0.1)
        with RunningDispatcher(dispatcher):
            publish(bus, burst)
            smtp.wait_for(1)
            publish(bus, [changed(burst[0], groups=("alla", "it"), people=45, after=10.0)])
            smtp.wait_for(2)
            publish(bus, [closed(burst[0], sequence=2, after=70.0), closed(burst[1], after=70.0)])
            smtp.wait_for(3)
            wait_until(lambda: dispatcher.delivered == 5, "five events delivered")
        again = Dispatcher(
            bus, [build_sink(config, SinkContext(database=delivery_log.database))], delivery_log, group="mail-again"
        )
        with RunningDispatcher(again):
            wait_until(lambda: caught_up(bus, "mail-again"), "the restarted stage reading every record again")
            time.sleep(0.5)
    finally:
        bus.close()
    mails = smtp.mails()
    assert len(mails) == 3 and again.delivered == 0
    assert all(m.user == USER for m in mails)  # logged in (only possible after STARTTLS: auth_require_tls)
    assert all(m.rcpt_tos == ("soc@kommun.example", "it-sakerhet@kommun.example") for m in mails)
    messages = [m.message for m in mails]
    root = f"<{group_id_for(burst[0].exposure_id)}@kommun.example>"
    assert messages[0]["Message-ID"] == root and messages[0]["In-Reply-To"] is None
    assert [m["In-Reply-To"] for m in messages[1:]] == [root, root]
    assert [m["References"] for m in messages[1:]] == [root, root]
    assert messages[2]["Message-ID"] == f"<{group_id_for(burst[0].exposure_id)}.resolved@kommun.example>"
    assert (
        messages[0]["Subject"] == "[permwatch] High exposure: 2 folders readable by alla (label case-00000, case-00001)"
    )
    assert messages[2]["Subject"].startswith("Re: [permwatch] Resolved after 1 min 10 s: 2 folders no longer")
    for message in messages:
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    text = messages[1].get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    assert "Changed: 1 folder\n  /srv/share/hr/cases/c-00000 now readable by alla, it (45 people)" in text
    html = messages[0].get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<code>/srv/share/hr/cases/c-00000: 2 paths, 40 people</code>" in html
    everything = b"".join(m.raw for m in mails).decode() + caplog.text
    assert PASSWORD not in everything and "Karlsson" not in everything and "svensson" not in everything
    events = [
        *burst,
        changed(burst[0], groups=("alla", "it"), people=45, after=10.0),
        closed(burst[0], sequence=2, after=70.0),
        closed(burst[1], after=70.0),
    ]
    allowed = allowed_values(
        events, burst_id=group_id_for(burst[0].exposure_id), actor=False, shown_paths=[e.folder + "/…" for e in burst]
    )
    assert [problem for m in messages for problem in mail_problems(m, allowed, actor=False)] == []
    assert "it-update" not in everything  # actor = "omit"


def test_an_opening_that_comes_with_its_later_change_is_mailed_as_an_opening(tmp_path: Path, smtp: SmtpServer) -> None:
    """A restart's backlog brings a folder's opening and a later change of it in one update of a burst already
    mailed: the update mail says the burst widened by that folder, as it is now (before: "Changed", the opening
    never told)."""
    deliver_an_opening_with_its_later_change(tmp_path, settings(smtp), smtp.wait_for)
    messages = [m.message for m in smtp.mails()]
    assert len(messages) == 2 and messages[1]["In-Reply-To"] == messages[0]["Message-ID"]
    text = messages[1].get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    assert "Widened: 1 more folder now readable, 2 in all\n  /srv/share/styrelse by alla, it\n" in text
    assert "Changed:" not in text


def test_implicit_tls_retries_4xx_and_a_server_that_is_down_and_gives_up_on_5xx(
    tmp_path: Path, smtp: SmtpServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="permwatch")
    bus = EmbeddedBus(tmp_path / "events.db")
    delivery_log = DeliveryLog(tmp_path / "alerts.db")
    config = settings(smtp, port=smtp.tls_port, security="tls")
    now = datetime.now(UTC)
    try:
        sink = build_sink(config, SinkContext(database=delivery_log.database))
        dispatcher = Dispatcher(bus, [sink], delivery_log, group="mail-2", backoff_initial=0.1, backoff_max=0.5)
        with RunningDispatcher(dispatcher):
            smtp.fail_data("451 4.3.0 Try again later", times=2)
            first = opened("exp-451", at=now)
            publish(bus, [first])
            wait_until(lambda: dispatcher.delivered == 1, "the mail accepted after two 451s")
            assert smtp.mailbox.data_attempts == 3 and len(smtp.mails()) == 1 and dispatcher.retries == 2

            smtp.fail_data("554 5.7.1 Message rejected")
            publish(bus, [opened("exp-554", folder="/srv/share/hr", at=now, causes=("fs-2",), actor="bo")])
            wait_until(lambda: dispatcher.failed == 1, "the 554 dead-lettered")
            assert smtp.mailbox.data_attempts == 4 and dispatcher.retries == 2  # not retried

            smtp.stop()
            down = opened("exp-down", folder="/srv/share/ekonomi", at=now, causes=("fs-3",), actor="cy")
            publish(bus, [down])
            wait_until(lambda: dispatcher.retries >= 4, "retries while the server is down")
            smtp.start()
            wait_until(lambda: dispatcher.delivered == 2, "the mail sent once the server is back")
        assert len(smtp.mails()) == 2
        for mail, event in zip(smtp.mails(), [first, down], strict=True):
            shown = event.sample_paths  # hide_below_label is off here; the actor is named (the default)
            allowed = allowed_values([event], burst_id=group_id_for(event.exposure_id), actor=True, shown_paths=shown)
            assert mail_problems(mail.message, allowed, actor=True) == []
            text = mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            assert f"Changed by: {event.actor}\r\n" in text

        monkeypatch.setenv(PASSWORD_ENV, "a-wrong-password")
        wrong = build_sink(config, SinkContext(database=delivery_log.database))
        dispatcher = Dispatcher(bus, [wrong], delivery_log, group="mail-3", backoff_initial=0.1)
        with RunningDispatcher(dispatcher):
            publish(bus, [opened("exp-auth", folder="/srv/share/it", at=now, causes=("fs-4",), actor="di")])
            wait_until(lambda: dispatcher.failed == 1, "a refused login is permanent")
            assert dispatcher.retries == 0
    finally:
        bus.close()
    assert f"smtp 127.0.0.1:{smtp.tls_port}: 451 4.3.0 Try again later" in caplog.text
    assert "535" in caplog.text
    assert PASSWORD not in caplog.text and "a-wrong-password" not in caplog.text


def test_digest_mode_mails_each_label_at_most_once_per_full_window(tmp_path: Path, smtp: SmtpServer) -> None:
    window = 4.0  # seconds: digest_minutes = 1/15
    hr = Label(name="hr", severity=Severity.HIGH, allowed_groups=("hr",))
    bus = EmbeddedBus(tmp_path / "events.db")
    delivery_log = DeliveryLog(tmp_path / "alerts.db")
    now = datetime.now(UTC)
    ledning = opened("exp-d", at=now)
    personal = opened("exp-h", folder="/srv/share/hr", label=hr, at=now, causes=("fs-h",), actor="bo")
    try:
        sink = build_sink(settings(smtp, digest_minutes=window / 60), SinkContext(database=delivery_log.database))
        dispatcher = Dispatcher(bus, [sink], delivery_log, group="mail-4", backoff_initial=0.1)
        with RunningDispatcher(dispatcher):
            publish(bus, [ledning])
            publish(bus, [personal])
            smtp.wait_for(2)  # each label's first mail goes at once: the window is per label
            publish(bus, [changed(ledning, groups=("alla", "it"), people=9, after=1.0)])
            publish(bus, [changed(personal, groups=("alla",), people=12, after=1.0)])
            wait_until(lambda: dispatcher.delivered == 4, "both changes held")  # the closes: mails of their own
            publish(bus, [closed(ledning, sequence=2, after=2.0), closed(personal, sequence=2, after=2.0)])
            wait_until(lambda: dispatcher.delivered == 6, "both changes and both closes held")
            assert len(smtp.mails()) == 2
            mails = smtp.wait_for(4)
            time.sleep(window + 1.0)  # a whole further window: nothing more is due, nothing more is mailed
    finally:
        bus.close()
    assert len(smtp.mails()) == 4
    subjects = [m.message["Subject"] for m in mails]
    assert subjects[:2] == [
        "[permwatch] Critical exposure: 1 folder readable by alla (label ledning)",
        "[permwatch] High exposure: 1 folder readable by alla (label hr)",
    ]
    assert sorted(subjects[2:]) == [
        "[permwatch] Digest: 2 alerts for label hr",
        "[permwatch] Digest: 2 alerts for label ledning",
    ]
    for first, label in ((mails[0], "ledning"), (mails[1], "hr")):
        [digest] = [m for m in mails[2:] if m.message["Subject"].endswith(f"label {label}")]
        # the label's full window after its first mail (the sink's wall clock against this monotonic one: 10 ms)
        assert digest.received_at - first.received_at >= window - 0.01
        body = digest.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "Changed: 1 folder" in body and "Closed: 1 folder" in body
