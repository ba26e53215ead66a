"""Exposure events for the alert tests: one management folder, and bursts of case folders, at fixed times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from permwatch.events import ExposureEvent, ExposureStatus, Grant, Label, Severity

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
LEDNING = Label(name="ledning", severity=Severity.CRITICAL, allowed_groups=("ledningsgrupp",))


class Clock:
    """An injected clock: tests move time by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def opened(
    exposure_id: str = "exp-1",
    *,
    folder: str = "/srv/share/ledning",
    label: Label = LEDNING,
    at: datetime = T0,
    actor: str | None = "it-update",
    causes: tuple[str, ...] = ("fs-1",),
    groups: tuple[str, ...] = ("alla",),
    people: int = 5,
    sample_paths: tuple[str, ...] | None = None,
    users: tuple[str, ...] = ("anna", "bo"),
) -> ExposureEvent:
    paths = sample_paths if sample_paths is not None else (folder, f"{folder}/protokoll 2026-11-20.txt")
    return ExposureEvent(
        event_id=f"{exposure_id}.0",
        exposure_id=exposure_id,
        sequence=0,
        status=ExposureStatus.OPENED,
        folder=folder,
        label=label,
        people=people,
        groups=groups,
        users=users,
        grants=tuple(Grant(entry=f"group:{g}:r-x", group=g, chain=(g,), people=people) for g in groups),
        paths_affected=len(paths),
        sample_paths=paths,
        cause_event_ids=causes,
        actor=actor,
        opened_at=at,
        detected_at=at,
        observed_at=at,
        source="processor",
    )


def changed(
    first: ExposureEvent, *, sequence: int = 1, groups: tuple[str, ...], people: int, after: float = 60.0
) -> ExposureEvent:
    at = first.opened_at + timedelta(seconds=after)
    return first.model_copy(
        update={
            "event_id": f"{first.exposure_id}.{sequence}",
            "sequence": sequence,
            "status": ExposureStatus.CHANGED,
            "groups": groups,
            "people": people,
            "grants": tuple(Grant(entry=f"group:{g}:r-x", group=g, chain=(g,), people=people) for g in groups),
            "observed_at": at,
            "detected_at": at,
        }
    )


def closed(first: ExposureEvent, *, sequence: int = 1, after: float = 3725.0) -> ExposureEvent:
    at = first.opened_at + timedelta(seconds=after)
    return first.model_copy(
        update={
            "event_id": f"{first.exposure_id}.{sequence}",
            "sequence": sequence,
            "status": ExposureStatus.CLOSED,
            "people": 0,
            "groups": (),
            "users": (),
            "grants": (),
            "paths_affected": 0,
            "sample_paths": (),
            "closed_at": at,
            "duration_seconds": after,
            "observed_at": at,
            "detected_at": at,
        }
    )


def case_burst(
    count: int, *, start: int = 0, at: datetime = T0, cause: str = "fs-burst", actor: str = "it-update"
) -> list[ExposureEvent]:
    """``count`` separately labelled case folders opened by one change (same cause and actor) within a second."""
    return [
        opened(
            f"exp-case-{i:05d}",
            folder=f"/srv/share/hr/cases/c-{i:05d}",
            label=Label(name=f"case-{i:05d}", severity=Severity.HIGH, allowed_groups=(f"case-{i:05d}-team",)),
            at=at + timedelta(milliseconds=(i - start) % 1000),
            actor=actor,
            causes=(cause,),
            people=40,
        )
        for i in range(start, start + count)
    ]
