"""The respond commands: ``ack``, ``approve``, ``revoke`` and ``revert`` an exposure, and the ``entitlements`` report.

A decision is an event on the ``decisions`` topic (see docs/events.md), keyed
by the exposure's folder; the processor takes it from there (an approved
exposure's changes are marked and not alerted, unless it widens). The
exposure is looked up on the ``exposures`` topic, so an unknown id is one
clear line, not a decision about nothing. ``revert`` runs the revert executor
of the filesystem collector (:mod:`collectors.fs.revert`) on this machine,
which must be the file server holding the folder. ``entitlements`` prints the
first-run report: per label, the pre-existing exposures still open.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from permwatch.cli.settings import load_config
from permwatch.config import Config
from permwatch.events import (
    TOPIC_DECISIONS,
    Decision,
    DecisionAction,
    ExposureEvent,
    ExposureStatus,
    encode,
)
from permwatch.transport import open_bus
from permwatch.transport.base import Bus

COMMANDS = ("ack", "approve", "revoke", "revert", "entitlements")
_AHEAD = re.compile(r"^\+(\d+(?:\.\d+)?)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_until(text: str, *, now: datetime | None = None) -> datetime:
    """``+12h`` / ``+7d`` / ``+30m``, or ISO 8601 (UTC when no zone is given); must lie ahead."""
    now = now or datetime.now(UTC)
    ahead = _AHEAD.match(text)
    if ahead:
        return now + timedelta(**{_UNITS[ahead.group(2)]: float(ahead.group(1))})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use ISO 8601 or e.g. +7d)") from None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if parsed <= now:
        raise argparse.ArgumentTypeError(f"{text!r} is not in the future")
    return parsed


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("exposure_id", metavar="EXPOSURE", help="the exposure id (exp-…)")
        p.add_argument("--config", "-c", type=Path, required=True, help="the TOML config naming the transport")
        p.add_argument("--by", default=None, help="who decides (default: the login name)")

    p = sub.add_parser("ack", help="acknowledge an exposure: someone is on it (recorded, alerts go on)")
    common(p)
    p.add_argument("--reason")
    p = sub.add_parser("approve", help="approve an exposure as intended until a time: its changes stop alerting")
    common(p)
    p.add_argument("--reason", required=True, help="why it is intended")
    p.add_argument("--until", type=parse_until, required=True, help="when the approval expires: +7d, ISO 8601")
    p = sub.add_parser("revoke", help="withdraw an approval: the exposure's changes alert again")
    common(p)
    p.add_argument("--reason")
    p = sub.add_parser("revert", help="restore the folder's permissions as they were before the exposure opened")
    common(p)
    p.add_argument("--dry-run", action="store_true", help="print the exact chmod/setfacl it would do, change nothing")
    p = sub.add_parser("entitlements", help="the first-run report: pre-existing exposures per label")
    p.add_argument("--config", "-c", type=Path, required=True)
    p.add_argument("--label")
    p.add_argument("--output", "-o", type=Path)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.command == "entitlements":
        return _entitlements(args, config)
    bus = open_bus(config.transport)
    try:
        latest = latest_exposure(bus, args.exposure_id)
        if latest is None:
            print(f"permwatch: no exposure {args.exposure_id} on the record", file=sys.stderr)
            return 1
        by = args.by or getpass.getuser()
        if args.command == "revert":
            from collectors.fs.revert import revert_exposure

            return revert_exposure(bus, config, latest, by=by, dry_run=args.dry_run, out=sys.stdout, err=sys.stderr)
        action = {"ack": DecisionAction.ACKNOWLEDGE, "approve": DecisionAction.APPROVE, "revoke": DecisionAction.REVOKE}
        decision = Decision(
            action=action[args.command],
            exposure_id=latest.exposure_id,
            folder=latest.folder,
            by=by,
            via="cli",
            reason=args.reason,
            until=getattr(args, "until", None),
            source="cli",
        )
        publish_decision(bus, decision)
    finally:
        bus.close()
    state = "closed" if latest.status is ExposureStatus.CLOSED else "open"
    print(f"{decision.action.value}: {latest.exposure_id} ({latest.folder}, {state}) by {by}")
    return 0


def publish_decision(bus: Bus, decision: Decision) -> None:
    bus.publish(TOPIC_DECISIONS, decision.key, encode(decision))
    bus.flush()


def latest_exposure(bus: Bus, exposure_id: str) -> ExposureEvent | None:
    """The last event of ``exposure_id`` on the ``exposures`` topic, if it has one."""
    from processor.forensics import recorded_exposures

    found: ExposureEvent | None = None
    for event in recorded_exposures(bus):
        if event.exposure_id == exposure_id and (found is None or event.sequence >= found.sequence):
            found = event
    return found


def _entitlements(args: argparse.Namespace, config: Config) -> int:
    from processor.entitlements import entitlement_report

    bus = open_bus(config.transport)
    try:
        text = entitlement_report(bus, label=args.label)
    finally:
        bus.close()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
