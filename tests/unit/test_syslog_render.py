"""Syslog: the exact RFC 5424 messages, with CEF and with ECS JSON, for an opened and a closed exposure."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from alerts.grouping import GroupUpdate, group_id_for
from alerts.syslog import SyslogConfig, SyslogSink
from permwatch.events import ExposureKind
from tests.unit.alert_samples import case_burst, changed, closed, opened
from tests.unit.test_slack_render import grouped

BURST = group_id_for("exp-1")
SD = f'[permwatch@32473 burst="{BURST}" exposure="exp-1" event="exp-1.0" label="ledning"]'


def sink(**settings: object) -> SyslogSink:
    return SyslogSink(SyslogConfig.model_validate({"host": "siem.example", "hostname": "fs01", **settings}))


def test_cef_opened_is_one_rfc5424_message_with_standard_keys() -> None:
    [message] = sink(format="cef").render(GroupUpdate.single(opened()))
    assert message == (
        # authpriv (10) * 8 + crit (2) = 82
        f"<82>1 2026-11-23T08:00:00.000Z fs01 permwatch - EXPOSURE_OPENED {SD} "
        "CEF:0|permwatch|permwatch|0.1.0|exposure-opened|Restricted folder readable outside its label|10|"
        "rt=1795420800000 act=exposure-opened externalId=exp-1 filePath=/srv/share/ledning fileType=directory "
        "cs1Label=label cs1=ledning cs2Label=readableByGroups cs2=alla "
        f"cs3Label=burstId cs3={BURST} "
        "cs4Label=samplePaths cs4=/srv/share/ledning,/srv/share/ledning/protokoll 2026-11-20.txt "
        "cs5Label=exposureKind cs5=contents "
        "cn1Label=peopleOutsideLabel cn1=5 cn2Label=pathsAffected cn2=2 start=1795420800000 suser=it-update "
        "msg=/srv/share/ledning (label ledning) readable by 5 people outside the label via alla"
    )


def test_cef_close_is_informational_and_names_who_could_read() -> None:
    first = opened()
    [message] = sink(format="cef", facility="local4").render(grouped(first, closed(first), new=1))
    assert message == (
        # local4 (20) * 8 + info (6) = 166
        "<166>1 2026-11-23T09:02:05.000Z fs01 permwatch - EXPOSURE_CLOSED "
        f'[permwatch@32473 burst="{BURST}" exposure="exp-1" event="exp-1.1" label="ledning"] '
        "CEF:0|permwatch|permwatch|0.1.0|exposure-closed|Exposure closed|10|"
        "rt=1795424525000 act=exposure-closed externalId=exp-1 filePath=/srv/share/ledning fileType=directory "
        "cs1Label=label cs1=ledning cs2Label=wasReadableByGroups cs2=alla "
        f"cs3Label=burstId cs3={BURST} cs4Label=samplePaths cs4= cs5Label=exposureKind cs5=contents "
        "cn1Label=peopleOutsideLabel cn1=0 cn2Label=pathsAffected cn2=0 start=1795420800000 end=1795424525000 "
        "suser=it-update msg=/srv/share/ledning (label ledning) is restricted again after 1 h 2 min"
    )


def test_cef_escapes_pipes_equals_backslashes_and_newlines() -> None:
    event = opened(folder="/srv/a|b=c\\d\ne", sample_paths=(), actor="x=y")
    [message] = sink(format="cef").render(GroupUpdate.single(event))
    assert "filePath=/srv/a|b\\=c\\\\d\\ne " in message
    assert "suser=x\\=y " in message
    cef = message.split("] ", 1)[1]
    assert cef.split("|")[:7] == ["CEF:0", "permwatch", "permwatch", "0.1.0", "exposure-opened", *cef.split("|")[5:7]]
    assert cef.split("|", 7)[7].startswith("rt=")  # a pipe in an extension value needs no escape


def test_ecs_opened_is_json_with_ecs_field_names_and_hidden_paths() -> None:
    [message] = sink(hide_below_label=True).render(GroupUpdate.single(opened()))
    prefix = f"<82>1 2026-11-23T08:00:00.000Z fs01 permwatch - EXPOSURE_OPENED {SD} "
    assert message.startswith(prefix)
    assert json.loads(message[len(prefix) :]) == {
        "@timestamp": "2026-11-23T08:00:00.000Z",
        "ecs": {"version": "8.11.0"},
        "message": "/srv/share/ledning (label ledning) readable by 5 people outside the label via alla",
        "event": {
            "kind": "alert",
            "category": ["file"],
            "type": ["change"],
            "action": "exposure-opened",
            "id": "exp-1.0",
            "dataset": "permwatch.exposure",
            "module": "permwatch",
            "provider": "permwatch",
            "severity": 99,
            "start": "2026-11-23T08:00:00.000Z",
            "reason": "label ledning does not allow the groups that can read it",
        },
        "file": {"path": "/srv/share/ledning", "type": "dir"},
        "group": {"name": ["alla"]},
        "rule": {"name": "label ledning"},
        "observer": {"vendor": "permwatch", "product": "permwatch", "version": "0.1.0", "type": "monitor"},
        "permwatch": {
            "exposure": {
                "id": "exp-1",
                "status": "opened",
                "kind": "contents",
                "people": 5,
                "paths_affected": 2,
                "sample_paths": ["/srv/share/ledning", "/srv/share/ledning/…"],
            },
            "label": {"name": "ledning", "severity": "critical"},
            "burst": {"id": BURST},
        },
        "user": {"name": "it-update"},
    }
    assert "protokoll" not in message


def test_ecs_close_has_end_and_duration_in_nanoseconds() -> None:
    first = opened()
    [message] = sink().render(grouped(first, closed(first), new=1))
    document = json.loads(message.split("] ", 1)[1])
    assert document["event"]["action"] == "exposure-closed"
    assert document["event"]["end"] == "2026-11-23T09:02:05.000Z"
    assert document["event"]["duration"] == 3_725_000_000_000
    assert document["group"]["name"] == ["alla"]
    assert message.startswith("<86>1 ")


def test_a_burst_is_one_message_per_event_sharing_the_burst_id() -> None:
    burst = case_burst(3)
    messages = sink().render(grouped(*burst))
    assert len(messages) == 3
    ids = {json.loads(m.split("] ", 1)[1])["permwatch"]["burst"]["id"] for m in messages}
    assert ids == {group_id_for("exp-case-00000")}
    assert all(m.startswith("<83>1 ") for m in messages)  # high: err


def test_the_people_who_can_read_are_never_named() -> None:
    event = opened(users=("anna.svensson", "bo.karlsson"))
    for format in ("ecs", "cef"):
        [message] = sink(format=format).render(GroupUpdate.single(event))
        assert "svensson" not in message and "karlsson" not in message


def test_config_is_checked() -> None:
    with pytest.raises(ValidationError, match="unknown facility"):
        SyslogConfig(host="x", facility="local9")
    with pytest.raises(ValidationError, match="format"):
        SyslogConfig.model_validate({"host": "x", "format": "leef"})
    assert sink(hostname="file server 1").hostname == "file_server_1"


def test_actor_omit_sends_no_user_name_in_cef_or_ecs() -> None:
    event = opened(actor="cecilia.berg")
    [cef] = sink(format="cef").render(GroupUpdate.single(event))
    [ecs] = sink(format="ecs").render(GroupUpdate.single(event))
    assert " suser=cecilia.berg " in cef and json.loads(ecs.split("] ", 1)[1])["user"] == {"name": "cecilia.berg"}
    [cef] = sink(format="cef", actor="omit").render(GroupUpdate.single(event))
    [ecs] = sink(format="ecs", actor="omit").render(GroupUpdate.single(event))
    assert "suser=" not in cef and "user" not in json.loads(ecs.split("] ", 1)[1])
    assert "cecilia" not in cef + ecs


def test_messages_burst_is_one_cef_message_per_update_of_a_burst() -> None:
    burst = case_burst(3)
    burst_id = group_id_for("exp-case-00000")
    folders = ",".join(e.folder for e in burst)
    [message] = sink(format="cef", messages="burst").render(grouped(*burst))
    assert message == (
        "<83>1 2026-11-23T08:00:00.002Z fs01 permwatch - BURST_OPENED "
        f'[permwatch@32473 burst="{burst_id}" update="1c1af8ea60375c45" events="3" label="case-00000"] '
        "CEF:0|permwatch|permwatch|0.1.0|burst-opened|Restricted folders readable outside their label|8|"
        f"rt=1795420800002 act=burst-opened externalId={burst_id} cs1Label=label cs1=case-00000,case-00001,case-00002 "
        f"cs2Label=readableByGroups cs2=alla cs3Label=burstId cs3={burst_id} cs4Label=topFolders cs4={folders} "
        "cs5Label=exposureKind cs5=contents cn1Label=peopleOutsideLabel cn1=40 cn2Label=pathsAffected cn2=6 "
        "cn3Label=folders cn3=3 start=1795420800000 suser=it-update "
        "msg=High exposure: 3 folders readable by alla (label case-00000, case-00001, case-00002); "
        "this update: 3 opened"
    )
    [message] = sink(format="cef", messages="burst").render(grouped(*burst, *(closed(e) for e in burst), new=3))
    assert message.startswith("<86>1 2026-11-23T09:02:05.002Z fs01 permwatch - BURST_RESOLVED ")
    assert "|burst-resolved|Exposures closed|8|" in message and " end=1795424525002 " in message
    assert message.endswith(
        "no longer readable by alla (label case-00000, case-00001, case-00002); this update: 3 closed"
    )


def test_messages_burst_as_ecs_says_what_the_update_did_and_the_kind() -> None:
    burst = case_burst(3)
    first = burst[0].model_copy(update={"kind": ExposureKind.NAMES})
    messages = sink(messages="burst", actor="omit").render(grouped(first, *burst[1:]))
    [message] = messages
    document = json.loads(message.split("] ", 1)[1])
    assert document["event"]["action"] == "burst-opened" and document["event"]["dataset"] == "permwatch.burst"
    assert document["permwatch"]["burst"] == {
        "id": group_id_for("exp-case-00000"),
        "status": "open",
        "kind": "mixed",
        "folders": 3,
        "open_folders": 3,
        "people_max": 40,
        "paths_affected": 6,
        "top_folders": [e.folder for e in burst],
        "first_exposure_id": "exp-case-00000",
        "update": {"opened": 3, "changed": 0, "closed": 0},
    }
    assert "user" not in document and "it-update" not in message  # actor = "omit"
    [update] = sink(messages="burst").render(grouped(first, *burst[1:], closed(first), new=1))
    document = json.loads(update.split("] ", 1)[1])
    assert " - BURST_UPDATED " in update and document["permwatch"]["burst"]["update"]["closed"] == 1
    assert document["permwatch"]["burst"]["kind"] == "contents"  # the open folders left are of contents
    assert document["message"].endswith("; this update: 1 closed") and document["user"] == {"name": "it-update"}


def test_messages_burst_sends_a_5000_folder_burst_as_one_message() -> None:
    burst = case_burst(5000)
    [message] = sink(messages="burst").render(grouped(*burst))
    document = json.loads(message.split("] ", 1)[1])
    assert (
        document["permwatch"]["burst"]["folders"] == 5000 and len(document["permwatch"]["burst"]["top_folders"]) == 10
    )
    assert len(message.encode()) < 4096
    [cef] = sink(format="cef", messages="burst").render(grouped(*burst))
    assert len(cef.encode()) < 4096 and " cn3Label=folders cn3=5000 " in cef  # 20 of the 5,000 labels named
    assert len(sink().render(grouped(*burst))) == 5000  # the default: one per event


def test_messages_burst_counts_every_event_of_the_update() -> None:
    """An exposure's opening and a later change in one update (a restart's backlog): one opened, one changed; the
    opening does not vanish behind the change. In the default mode each is its own message."""
    first = opened()
    other = opened("exp-2", folder="/srv/share/styrelse", causes=("fs-2",))
    widened = changed(other, groups=("alla", "it"), people=7, after=1.0)
    [message] = sink(messages="burst").render(grouped(first, other, widened, new=2))
    document = json.loads(message.split("] ", 1)[1])
    assert document["permwatch"]["burst"]["update"] == {"opened": 1, "changed": 1, "closed": 0}
    assert document["message"].endswith("; this update: 1 opened, 1 changed")
    messages = sink().render(grouped(first, other, widened, new=2))
    assert [m.split(" ")[5] for m in messages] == ["EXPOSURE_OPENED", "EXPOSURE_CHANGED"]
