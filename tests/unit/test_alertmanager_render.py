"""Alertmanager: one alert per exposure, the burst as a label, endsAt on close, the old label set resolved on change."""

from __future__ import annotations

from typing import Any

from alerts.alertmanager import AlertmanagerConfig, AlertmanagerSink
from alerts.grouping import BurstGrouper, GroupUpdate, group_id_for
from permwatch.events import ExposureEvent
from tests.unit.alert_samples import case_burst, changed, closed, opened

BURST = group_id_for("exp-1")


def sink(**settings: Any) -> AlertmanagerSink:
    return AlertmanagerSink(AlertmanagerConfig.model_validate({"url": "http://am:9093/", **settings}))


def grouped(*events: ExposureEvent, new: int) -> GroupUpdate:
    grouper = BurstGrouper()
    group_id = ""
    for event in events:
        group_id, _ = grouper.assign(event)
    return GroupUpdate(grouper.snapshot(group_id), tuple(events[len(events) - new :]))


def test_opened_exposure_is_one_firing_alert() -> None:
    assert sink().render(GroupUpdate.single(opened())) == [
        {
            "labels": {
                "alertname": "PermwatchExposure",
                "exposure_id": "exp-1",
                "label": "ledning",
                "severity": "critical",
                "folder": "/srv/share/ledning",
                "groups": "alla",
                "burst": BURST,
            },
            "annotations": {
                "summary": "/srv/share/ledning (label ledning) readable by 5 people outside the label via alla",
                "people": "5",
                "actor": "it-update",
                "paths": "/srv/share/ledning\n/srv/share/ledning/protokoll 2026-11-20.txt",
                "paths_affected": "2",
                "kind": "contents",
                "replay": "permwatch timeline exp-1",
            },
            "startsAt": "2026-11-23T08:00:00Z",
        }
    ]


def test_close_sets_ends_at_on_the_same_label_set() -> None:
    first = opened()
    [alert] = sink().render(grouped(first, closed(first, after=3725.0), new=1))
    assert alert["labels"]["groups"] == "alla"  # the readers while open, so it is the same alert
    assert alert["startsAt"] == "2026-11-23T08:00:00Z"
    assert alert["endsAt"] == "2026-11-23T09:02:05Z"


def test_changed_readers_resolve_the_old_label_set() -> None:
    first = opened()
    alerts = sink().render(grouped(first, changed(first, groups=("alla", "it"), people=7), new=1))
    assert [(a["labels"]["groups"], a.get("endsAt")) for a in alerts] == [
        ("alla,it", None),
        ("alla", "2026-11-23T08:01:00Z"),
    ]
    assert alerts[0]["annotations"]["people"] == "7"


def test_refresh_resends_every_open_alert_of_the_burst() -> None:
    burst = case_burst(4)
    update = grouped(*burst, closed(burst[1]), new=1)
    refresh = GroupUpdate(update.group, (), refresh=True)
    alerts = sink().render(refresh)
    assert [a["labels"]["exposure_id"] for a in alerts] == ["exp-case-00000", "exp-case-00002", "exp-case-00003"]
    assert all("endsAt" not in a for a in alerts)
    assert {a["labels"]["burst"] for a in alerts} == {group_id_for("exp-case-00000")}


def test_extra_labels_generator_url_and_hidden_paths() -> None:
    am = sink(extra_labels={"team": "soc"}, replay_url="https://pw.example/t/{exposure_id}", hide_below_label=True)
    event = opened(sample_paths=("/srv/share/ledning/Klient Karlsson.docx", "/srv/share/ledning/x/y.txt"))
    [alert] = am.render(GroupUpdate.single(event))
    assert alert["labels"]["team"] == "soc"
    assert alert["generatorURL"] == "https://pw.example/t/exp-1"
    assert alert["annotations"]["paths"] == "/srv/share/ledning/…"
    assert am.config.url == "http://am:9093"
