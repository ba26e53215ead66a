"""The syslog sink against Debian's real rsyslogd: RFC 5424 over TLS and plain TCP, parsed by rsyslog itself.

- Over TLS (gtls, a certificate made for the test) a burst of three folders and
  its closes arrive as six messages that rsyslog parses as RFC 5424 (app-name,
  msgid, structured data with the burst id) whose MSG is ECS JSON; paths below
  the labelled folder are hidden and no file content or reader name is sent;
  every ECS field is on the allow-list (``alert_allowlist``), with ``actor =
  "omit"`` no ``user.name``; the CEF messages too, with ``suser``.
- Started again with its consumer position lost (a crash before the commit),
  the alerts stage sends nothing twice: the delivery log dedupes by event id.
- A receiver whose certificate the configured CA does not sign is a permanent
  error: dead-lettered, not retried, nothing sent in clear.
- Over plain TCP with CEF: a receiver that is down is retried until it is up,
  and a receiver killed between two alerts is noticed and reconnected to;
  every alert arrives exactly once.
- With ``messages = "burst"`` an update's message counts every event of it: a
  folder's opening and a later change in one update are one opened, one changed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerts.base import SinkContext
from alerts.dispatch import DeliveryLog, Dispatcher
from alerts.grouping import group_id_for
from alerts.registry import build_sink
from permwatch.transport.embedded import EmbeddedBus
from tests.integration.alert_allowlist import (
    SYSLOG_WORDS,
    allowed_values,
    cef_problems,
    ecs_problems,
    foreign_words,
)
from tests.integration.servers.certs import self_signed
from tests.integration.servers.rsyslog import RsyslogServer
from tests.integration.test_alerts_delivery import (
    RunningDispatcher,
    deliver_an_opening_with_its_later_change,
    publish,
    wait_until,
)
from tests.unit.alert_samples import case_burst, closed, opened

pytestmark = pytest.mark.integration

SECRET_CONTENT = "CONFIDENTIAL-CASE-NOTES-7f3a"


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[RsyslogServer]:
    with RsyslogServer(tmp_path / "rsyslog") as server:
        yield server


def test_a_burst_over_tls_is_parsed_as_rfc5424_with_ecs_json_and_never_repeated(
    tmp_path: Path, rsyslog: RsyslogServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert rsyslog.certificate is not None
    settings = {
        "kind": "syslog",
        "host": "127.0.0.1",
        "port": rsyslog.tls_port,
        "tls": True,
        "ca_file": str(rsyslog.certificate.cert),
        "format": "ecs",
        "hostname": "fs01",
        "hide_below_label": True,
        "actor": "omit",
    }
    now = datetime.now(UTC).replace(microsecond=0)
    burst = case_burst(3, at=now)
    burst[0] = opened(
        burst[0].exposure_id,
        folder=burst[0].folder,
        label=burst[0].label,
        at=now,
        causes=("fs-burst",),
        people=40,
        sample_paths=(burst[0].folder, burst[0].folder + "/Klient Karlsson.docx"),
        users=("anna.svensson",),
    )
    bus = EmbeddedBus(tmp_path / "events.db")
    delivery_log = DeliveryLog(tmp_path / "alerts.db")
    try:
        sink = build_sink(settings, SinkContext(database=delivery_log.database))
        dispatcher = Dispatcher(bus, [sink], delivery_log, group="syslog-1", backoff_initial=0.1)
        with RunningDispatcher(dispatcher):
            publish(bus, burst)
            rsyslog.wait_for(3)
            publish(bus, [closed(e, after=65.0) for e in burst])
            received = rsyslog.wait_for(6)
            wait_until(lambda: dispatcher.delivered == 6, "six deliveries recorded")
        sink.close()  # type: ignore[attr-defined]
        # the alerts stage again, its consumer position lost: every record comes again, none is sent again
        sink = build_sink(settings, SinkContext(database=delivery_log.database))
        again = Dispatcher(bus, [sink], delivery_log, group="syslog-restarted", backoff_initial=0.1)
        with RunningDispatcher(again):
            wait_until(lambda: caught_up(bus, "syslog-restarted"), "the restarted stage reading every record again")
            time.sleep(0.5)
        assert again.delivered == 0
        sink.close()  # type: ignore[attr-defined]
    finally:
        bus.close()
    received = rsyslog.received()
    assert len(received) == 6
    burst_id = group_id_for(burst[0].exposure_id)
    assert [r.msgid for r in received] == ["EXPOSURE_OPENED"] * 3 + ["EXPOSURE_CLOSED"] * 3
    assert {(r.hostname, r.app_name) for r in received} == {("fs01", "permwatch")}
    assert [r.pri for r in received] == [83] * 3 + [86] * 3  # authpriv.err, then authpriv.info
    assert all(f'burst="{burst_id}"' in r.structured_data for r in received)
    documents = [json.loads(r.msg) for r in received]
    assert [d["event"]["action"] for d in documents] == ["exposure-opened"] * 3 + ["exposure-closed"] * 3
    assert [d["file"]["path"] for d in documents[:3]] == [e.folder for e in burst]
    assert documents[0]["permwatch"]["exposure"]["sample_paths"] == [burst[0].folder, burst[0].folder + "/…"]
    assert {d["permwatch"]["burst"]["id"] for d in documents} == {burst_id}
    assert all(d["group"]["name"] == ["alla"] and "user" not in d for d in documents)  # actor = "omit"
    events = [*burst, *(closed(e, after=65.0) for e in burst)]
    shown = [e.folder + "/…" for e in burst]
    allowed = allowed_values(events, burst_id=burst_id, actor=False, shown_paths=shown)
    assert [problem for d in documents for problem in ecs_problems(d, allowed, actor=False)] == []
    assert all(not foreign_words(r.structured_data, allowed, SYSLOG_WORDS | {"burst", "event"}) for r in received)
    assert received[0].timestamp.startswith(now.strftime("%Y-%m-%dT%H:%M:%S"))
    everything = rsyslog.received_path.read_text(encoding="utf-8") + caplog.text
    assert "Karlsson" not in everything and "svensson" not in everything and SECRET_CONTENT not in everything


def caught_up(bus: EmbeddedBus, group: str) -> bool:
    """The consumer group has handled and committed every exposure record."""
    probe = bus.lag_probe(["exposures"], group)
    try:
        lag = probe.lag()
    finally:
        probe.close()
    return lag is not None and not any(lag.values())


def test_plain_tcp_cef_retries_a_receiver_that_is_down_or_was_killed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rsyslog = RsyslogServer(tmp_path / "rsyslog")
    rsyslog.start()
    rsyslog.stop()  # its ports are known and free: the receiver is down when the first alert comes
    settings = {"kind": "syslog", "host": "127.0.0.1", "port": rsyslog.plain_port, "tls": False, "format": "cef"}
    bus = EmbeddedBus(tmp_path / "events.db")
    delivery_log = DeliveryLog(tmp_path / "alerts.db")
    now = datetime.now(UTC)
    first = opened("exp-down", at=now)
    second = opened("exp-killed", folder="/srv/share/hr/lön", at=now, actor="bo", causes=("fs-2",))
    try:
        sink = build_sink(settings, SinkContext(database=delivery_log.database))
        dispatcher = Dispatcher(bus, [sink], delivery_log, group="syslog-2", backoff_initial=0.1, backoff_max=0.5)
        with RunningDispatcher(dispatcher):
            publish(bus, [first])
            wait_until(lambda: dispatcher.retries >= 2, "retries while the receiver is down")
            assert dispatcher.delivered == 0
            rsyslog.start()
            wait_until(lambda: dispatcher.delivered == 1, "delivery once the receiver is up")
            rsyslog.wait_for(1)
            rsyslog.kill()  # the sink's connection is now dead; the next alert must notice and reconnect
            retries = dispatcher.retries
            publish(bus, [second])
            wait_until(lambda: dispatcher.retries > retries, "a retry while the receiver is gone")
            rsyslog.start()
            wait_until(lambda: dispatcher.delivered == 2, "the second delivery after the restart")
            received = rsyslog.wait_for(2)
            time.sleep(0.5)
        sink.close()  # type: ignore[attr-defined]
    finally:
        rsyslog.stop()
        bus.close()
    received = rsyslog.received()
    assert len(received) == 2
    assert [r.msg.split("|")[4] for r in received] == ["exposure-opened", "exposure-opened"]
    assert "filePath=/srv/share/ledning " in received[0].msg
    assert "filePath=/srv/share/hr/lön " in received[1].msg and "suser=bo " in received[1].msg
    events = [first, second]
    shown = [path for e in events for path in e.sample_paths]  # hide_below_label is off here
    for event, r in zip(events, received, strict=True):
        allowed = allowed_values([event], burst_id=group_id_for(event.exposure_id), actor=True, shown_paths=shown)
        assert cef_problems(r.msg, allowed, actor=True) == []
    assert "retrying exp-down.0" in caplog.text and "retrying exp-killed.0" in caplog.text


def test_a_receiver_certificate_the_ca_does_not_sign_is_permanent(
    tmp_path: Path, rsyslog: RsyslogServer, caplog: pytest.LogCaptureFixture
) -> None:
    other = self_signed(tmp_path / "other-ca")
    settings = {"kind": "syslog", "host": "127.0.0.1", "port": rsyslog.tls_port, "ca_file": str(other.cert)}
    bus = EmbeddedBus(tmp_path / "events.db")
    delivery_log = DeliveryLog(tmp_path / "alerts.db")
    try:
        sink = build_sink(settings, SinkContext(database=delivery_log.database))
        dispatcher = Dispatcher(bus, [sink], delivery_log, group="syslog-3", backoff_initial=0.1)
        with RunningDispatcher(dispatcher):
            publish(bus, [opened("exp-cert", at=datetime.now(UTC))])
            wait_until(lambda: dispatcher.failed == 1, "the refused certificate dead-lettered")
        assert dispatcher.retries == 0 and rsyslog.received() == []
    finally:
        bus.close()
    assert "TLS certificate refused" in caplog.text


def test_messages_burst_sends_a_40_folder_burst_as_one_message_and_its_close_as_few(
    tmp_path: Path, rsyslog: RsyslogServer
) -> None:
    settings = {
        "kind": "syslog",
        "host": "127.0.0.1",
        "port": rsyslog.plain_port,
        "tls": False,
        "format": "ecs",
        "messages": "burst",
        "hostname": "fs01",
    }
    burst = case_burst(40, at=datetime.now(UTC).replace(microsecond=0))
    closes = [closed(e, after=65.0) for e in burst]
    bus = EmbeddedBus(tmp_path / "events.db")
    delivery_log = DeliveryLog(tmp_path / "alerts.db")
    try:
        publish(bus, burst)  # before the stage starts: its first poll reads the whole burst, one update
        sink = build_sink(settings, SinkContext(database=delivery_log.database))
        dispatcher = Dispatcher(bus, [sink], delivery_log, group="syslog-burst", backoff_initial=0.1)
        with RunningDispatcher(dispatcher):
            rsyslog.wait_for(1)
            wait_until(lambda: dispatcher.delivered == 40, "the burst delivered")
            publish(bus, closes)  # read as it is written: one update or a few
            wait_until(lambda: dispatcher.delivered == 80, "the closes delivered")
            time.sleep(0.5)
        sink.close()  # type: ignore[attr-defined]
    finally:
        bus.close()
    received = rsyslog.received()
    documents = [json.loads(r.msg) for r in received]
    burst_id = group_id_for(burst[0].exposure_id)
    assert received[0].msgid == "BURST_OPENED" and documents[0]["permwatch"]["burst"]["update"]["opened"] == 40
    assert documents[0]["permwatch"]["burst"]["folders"] == 40 and received[-1].msgid == "BURST_RESOLVED"
    assert {r.msgid for r in received[1:-1]} <= {"BURST_UPDATED"} and len(received) < 1 + len(closes)
    assert sum(d["permwatch"]["burst"]["update"]["closed"] for d in documents) == 40
    assert {d["permwatch"]["burst"]["id"] for d in documents} == {burst_id}
    allowed = allowed_values([*burst, *closes], burst_id=burst_id, actor=True)
    assert [problem for d in documents for problem in ecs_problems(d, allowed, actor=True, burst=True)] == []


def test_messages_burst_counts_an_opening_that_comes_with_its_later_change(
    tmp_path: Path, rsyslog: RsyslogServer
) -> None:
    """A restart's backlog brings a folder's opening and a later change of it in one update of a burst already
    sent: the burst's message counts both (before, the opening vanished behind the change)."""
    settings = {"kind": "syslog", "host": "127.0.0.1", "port": rsyslog.plain_port, "tls": False, "messages": "burst"}
    sink = deliver_an_opening_with_its_later_change(tmp_path, settings, rsyslog.wait_for)
    sink.close()  # type: ignore[attr-defined]
    received = rsyslog.received()
    assert [r.msgid for r in received] == ["BURST_OPENED", "BURST_UPDATED"]
    document = json.loads(received[1].msg)
    assert document["permwatch"]["burst"]["update"] == {"opened": 1, "changed": 1, "closed": 0}
    assert document["message"].endswith("; this update: 1 opened, 1 changed")


def test_the_allow_list_check_finds_a_user_name_a_file_name_and_an_unknown_field() -> None:
    """The check the tests above rely on fails for what it must: it is not vacuous."""
    event = opened("exp-check", actor="cecilia.berg")
    allowed = allowed_values([event], burst_id=group_id_for("exp-check"), actor=False, shown_paths=[event.folder])
    document = {
        "message": f"{event.folder} readable by alla",
        "file": {"path": event.folder + "/Klient Karlsson.docx"},
        "user": {"name": "cecilia.berg"},
        "related": {"user": ["anna"]},
    }
    assert ecs_problems(document, allowed, actor=False) == [
        "ECS file.path: ['Karlsson', 'Klient', 'docx']",
        "ECS field user.name is not on the allow-list",
        "ECS field related.user[] is not on the allow-list",
    ]
    cef = f"CEF:0|permwatch|permwatch|0.1.0|exposure-opened|x|10|filePath={event.folder} suser=cecilia.berg msg=hi anna"
    assert cef_problems(cef, allowed, actor=False) == [
        "CEF header 'x': ['x']",
        "CEF key suser is not on the allow-list",
        "CEF msg: ['anna', 'hi']",
    ]
