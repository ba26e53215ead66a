"""One exposure of a payroll folder, its opens and contacts, at fixed times: the breach report's unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from permwatch.config import ContactConfig
from permwatch.events import (
    Actor,
    DirectoryUser,
    ExposureEvent,
    ExposureStatus,
    FsAccessEvent,
    Grant,
    Label,
    PersonalData,
    Severity,
)

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
FOLDER = "/srv/share/lön"
PAYROLL = Label(
    name="lön",
    severity=Severity.CRITICAL,
    allowed_groups=("lönegrupp",),
    personal_data=PersonalData(
        data_categories=("salaries", "bank accounts"),
        subject_categories=("employees",),
        approx_subjects=240,
        approx_records=2880,
        special_categories=("trade union membership",),
        data_owner="HR manager",
    ),
)
CONTROLLER = ContactConfig(name="Verkstad AB", address="Storgatan 1, Umeå", email="info@verkstad.example")
DPO = ContactConfig(name="Dana Dataskydd", email="dpo@verkstad.example", phone="+46 90 123 45")
NAMES = [
    DirectoryUser(name="cecilia", uid=33203),
    DirectoryUser(name="david", uid=33204),
    DirectoryUser(name="hanna", uid=33205),
]


def exposure(seq: int, status: ExposureStatus, at: datetime, **fields: object) -> ExposureEvent:
    base: dict[str, object] = dict(
        event_id=f"exp-1.{seq}",
        exposure_id="exp-1",
        sequence=seq,
        status=status,
        folder=FOLDER,
        label=PAYROLL,
        people=0,
        paths_affected=0,
        opened_at=T0,
        observed_at=at,
        detected_at=T0 + timedelta(seconds=2),
        source="processor",
    )
    base.update(fields)
    return ExposureEvent.model_validate(base)


EVENTS = [
    exposure(
        0,
        ExposureStatus.OPENED,
        T0,
        people=2,
        groups=("alla",),
        users=("cecilia", "david"),
        grants=(Grant(entry="group:alla", group="alla", chain=("alla",), people=2),),
        paths_affected=13,
        sample_paths=(FOLDER, f"{FOLDER}/2026-11.ods"),
        actor="erik",
        actor_confidence="pidfd",
    ),
    exposure(
        1,
        ExposureStatus.CLOSED,
        T0 + timedelta(minutes=42),
        closed_at=T0 + timedelta(minutes=42),
        duration_seconds=2520.0,
        actor="hanna",
    ),
]


def opened(uid: int, path: str, at: datetime, process: str = "cat") -> FsAccessEvent:
    return FsAccessEvent(
        path=path,
        folder=FOLDER,
        actor=Actor(uid=uid, process=process, pid=uid + 1, confidence="pidfd"),
        observed_at=at,
        source="fs",
    )


ACCESSES = [
    opened(33203, f"{FOLDER}/2026-11.ods", T0 + timedelta(minutes=5)),  # cecilia, outsider, while exposed
    opened(33205, f"{FOLDER}/2026-11.ods", T0 + timedelta(minutes=6)),  # hanna, allowed, while exposed
    opened(33204, f"{FOLDER}/2026-10.ods", T0 + timedelta(minutes=7), "libreoffice"),  # david, outsider
    opened(33203, f"{FOLDER}/2026-09.ods", T0 + timedelta(minutes=50)),  # cecilia again, after the close
    opened(33204, f"{FOLDER}/2026-08.ods", T0 - timedelta(minutes=1)),  # before the exposure
]
