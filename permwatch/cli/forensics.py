"""The workshop commands: replay, exposures, who-can-read, timeline, report.

Each reads the recorded history from the configured transport (Kafka or the
embedded log) and rebuilds state through the processor's own code
(:mod:`processor.replay`); none of them publishes anything or fires a sink
unless ``replay --with-sinks`` asks for it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from permwatch.cli.settings import load_config
from permwatch.config import Config, ConfigError, LabelsConfig
from permwatch.events import (
    INPUT_TOPICS,
    TOPIC_ACCESS,
    TOPIC_EXPOSURES,
    AnyEvent,
    Decision,
    ExposureEvent,
    ExposureOpenedBy,
    Label,
)
from permwatch.transport import open_bus

if TYPE_CHECKING:
    from processor.forensics import ExposureWindow
    from processor.replay import ReplayResult
    from processor.workshop_store import FromSnapshot, WorkshopStore

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """``now``, ``-2h`` / ``-30m`` / ``-7d``, or ISO 8601 (UTC when no zone is given)."""
    now = now or datetime.now(UTC)
    if text == "now":
        return now
    relative = _RELATIVE.match(text)
    if relative:
        return now - timedelta(**{_UNITS[relative.group(2)]: float(relative.group(1))})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use ISO 8601, 'now' or e.g. -2h)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", type=Path, required=True, help="the TOML config naming the transport")
        p.add_argument("--gap-ms", type=int, default=0, help="judge records this close (ms) together; 0: same ms")

    p = sub.add_parser("replay", help="rebuild state from the event history and list what it judged")
    common(p)
    p.add_argument("--since", type=parse_time, help="report verdicts from this time on")
    p.add_argument("--until", type=parse_time, help="stop reading history at this time")
    p.add_argument("--policy", type=Path, help="what-if: a TOML file with a [labels] table to judge by instead")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("exposures", help="every exposure window with start, end, duration, groups, people, actor")
    common(p)
    p.add_argument("--label")
    p.add_argument("--since", type=parse_time)
    p.add_argument("--until", type=parse_time)
    p.add_argument("--recorded", action="store_true", help="read the exposures the live run emitted, not a replay")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("who-can-read", help="effective readers of a path at a past moment, with grant chains")
    common(p)
    p.add_argument("path")
    p.add_argument("--at", type=parse_time, default="now")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("timeline", help="changes and exposure windows of a folder (or of an exposure)")
    common(p)
    p.add_argument("target", help="a path or an exposure id")
    p.add_argument("--format", choices=["text", "json", "html"], default="text")
    p.add_argument("--output", "-o", type=Path, help="write here instead of standard output")

    p = sub.add_parser("report", help="a Markdown breach-report draft for one exposure")
    common(p)
    p.add_argument("exposure_id")
    p.add_argument("--output", "-o", type=Path)

    # -- the breach report the data-protection officer files (#18)
    p = sub.add_parser("breach-report", help="the GDPR Art. 33(3) breach report of one exposure, with opens")
    p.add_argument("--config", "-c", type=Path, required=True, help="the TOML config naming the transport")
    p.add_argument("exposure_id")
    p.add_argument("--format", choices=["markdown", "html"], default="markdown")
    p.add_argument("--output", "-o", type=Path, help="write here instead of standard output")

    p = sub.add_parser("archive", help="copy the whole event history into an embedded log file (for a workshop laptop)")
    p.add_argument("--config", "-c", type=Path, required=True)
    p.add_argument("--output", "-o", type=Path, required=True, help="a new SQLite event-log file")

    # -- the workshop's snapshots and per-folder index (issue 21)
    p = sub.add_parser("snapshot", help="index the history and snapshot its state, so workshop questions take a second")
    p.add_argument("--config", "-c", type=Path, required=True)
    p.add_argument("--every", type=int, default=5_000, help="records between snapshots")
    for name in ("exposures", "who-can-read", "timeline"):
        sub.choices[name].add_argument(
            "--full-replay", action="store_true", help="replay all history even where a workshop store would do"
        )


COMMANDS = ("replay", "exposures", "who-can-read", "timeline", "report", "archive", "breach-report", "snapshot")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    handler: Callable[[argparse.Namespace, Config], int] = {
        "replay": _replay,
        "exposures": _exposures,
        "who-can-read": _who_can_read,
        "timeline": _timeline,
        "report": _report,
        "archive": _archive,
        "breach-report": _breach_report,
        "snapshot": _snapshot,
    }[args.command]
    return handler(args, config)


def _history_replay(
    config: Config,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    gap_ms: int = 0,
    label_for: Callable[[str], Label | None] | None = None,
    keep: Callable[[AnyEvent], object | None] | None = None,
    quiet: bool = False,
) -> ReplayResult:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from processor.replay import replay

    bus = open_bus(config.transport)
    until_ms = None if until is None else int(until.timestamp() * 1000)
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("replaying history: {task.completed:,} events"),
            TimeElapsedColumn(),
            console=None,
            transient=True,
            disable=quiet or not sys.stderr.isatty(),
        ) as progress:
            task = progress.add_task("replay", total=None)
            result = replay(
                bus.history(INPUT_TOPICS, until_ms=until_ms),
                since=since,
                until=until,
                gap_ms=gap_ms,
                label_for=label_for,
                keep=keep,
                progress=lambda n: progress.update(task, completed=n),
            )
    finally:
        bus.close()
    if not quiet:
        print(
            f"replayed {result.events:,} events in {result.seconds:.2f} s ({result.events_per_second:,.0f} events/s)",
            file=sys.stderr,
        )
    return result


def _what_if(path: Path) -> Callable[[str], Label | None]:
    from collectors.labels import LabelPolicy

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        labels = LabelsConfig.model_validate(raw.get("labels", raw))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        raise ConfigError(f"{path}: key 'labels.{'.'.join(str(p) for p in err['loc'])}': {err['msg']}") from None
    return LabelPolicy(labels, source="what-if").label_by_rules


def _replay(args: argparse.Namespace, config: Config) -> int:
    from processor.forensics import exposure_windows

    label_for = _what_if(args.policy) if args.policy else None
    result = _history_replay(config, since=args.since, until=args.until, gap_ms=args.gap_ms, label_for=label_for)
    windows = exposure_windows(result.verdicts)
    if args.json:
        print(json.dumps([w.to_json() for w in windows], indent=2))
    else:
        _print_windows(windows)
    return 0


def _recorded_exposures(config: Config) -> list[ExposureEvent]:
    from processor.forensics import recorded_exposures

    bus = open_bus(config.transport)
    try:
        return list(recorded_exposures(bus))
    finally:
        bus.close()


def _recorded_opened_by(config: Config, folder: str) -> list[ExposureOpenedBy]:
    """The live processor's marks of outsiders' opens in ``folder`` while exposed (issue 18), in order."""
    from permwatch.events import DecodeError, decode

    bus = open_bus(config.transport)
    try:
        marks = []
        for record in bus.history([TOPIC_EXPOSURES]):
            try:
                event = decode(record.value)
            except DecodeError:
                continue
            if isinstance(event, ExposureOpenedBy) and event.folder == folder:
                marks.append(event)
        return marks
    finally:
        bus.close()


def _exposures(args: argparse.Namespace, config: Config) -> int:
    from processor.forensics import exposure_windows

    store = None if args.recorded or args.gap_ms else _workshop_store(config, args.full_replay)
    if store is not None:
        windows = _store_windows(store, label=args.label, since=args.since, until=args.until)
    else:
        source = _recorded_exposures(config) if args.recorded else _history_replay(config, gap_ms=args.gap_ms).verdicts
        windows = exposure_windows(source, label=args.label, since=args.since, until=args.until)
    if args.json:
        print(json.dumps([w.to_json() for w in windows], indent=2))
    else:
        _print_windows(windows)
    return 0


def _print_windows(windows: list[ExposureWindow]) -> None:
    if not windows:
        print("no exposures")
        return
    for w in windows:
        end = w.closed_at.isoformat(timespec="seconds") if w.closed_at else "still open"
        duration = f"{w.duration_seconds:.0f} s" if w.duration_seconds is not None else "-"
        print(
            f"{w.exposure_id}  {w.folder}  label={w.label}  kind={w.kind.value}  "
            f"{w.opened_at.isoformat(timespec='seconds')} → {end} ({duration})  "
            f"people={w.max_people}  groups={','.join(w.groups) or '-'}  "
            f"actor={','.join(w.actors) or '-'}  causes={','.join(w.cause_event_ids[:3])}"
        )


def _who_can_read(args: argparse.Namespace, config: Config) -> int:
    from processor.forensics import who_can_read

    path = args.path.rstrip("/") or "/"
    store = None if args.gap_ms else _workshop_store(config, args.full_replay)
    if store is not None:
        result = _store_state(store, until=args.at)
    else:
        result = _history_replay(config, until=args.at, gap_ms=args.gap_ms)
    if result.engine.paths.get(path) is None:
        print(f"permwatch: {path} is not in the recorded history at {args.at.isoformat()}", file=sys.stderr)
        return 1
    label, readers = who_can_read(result.engine, path)
    if args.json:
        print(
            json.dumps(
                {
                    "path": path,
                    "at": args.at.isoformat(),
                    "label": label.name if label else None,
                    "readers": [r.__dict__ | {"chain": list(r.chain)} for r in readers],
                },
                indent=2,
            )
        )
        return 0
    print(f"{path} at {args.at.isoformat()}: label {label.name if label else '(none)'}, {len(readers)} grant(s)")
    for r in readers:
        chain = " → ".join(r.chain) if r.chain else ""
        verdict = "allowed" if r.allowed else "OUTSIDE LABEL"
        print(f"  {r.user:<20} via {r.entry:<24} {chain:<30} {verdict if label else ''}")
    return 0


def _timeline(args: argparse.Namespace, config: Config) -> int:
    from processor.forensics import exposure_windows
    from processor.timeline import build_timeline, render_html, timeline_items, to_json_text, with_opens_marked

    target = args.target
    if not target.startswith("/"):
        found = None if args.gap_ms else _workshop_store(config, args.full_replay)
        if found is not None:
            windows = _store_windows(found, label=None, since=None, until=None)
        else:
            windows = exposure_windows(_history_replay(config, gap_ms=args.gap_ms, quiet=True).verdicts)
        match = next((w for w in windows if w.exposure_id == target), None)
        if match is None:
            print(f"permwatch: no exposure {target} in the recorded history", file=sys.stderr)
            return 1
        target = match.folder
    folder = target.rstrip("/") or "/"
    store = None if args.gap_ms else _workshop_store(config, args.full_replay)
    if store is not None:
        result = _store_folder(store, folder, keep=timeline_items(folder))
    else:
        result = _history_replay(config, gap_ms=args.gap_ms, keep=timeline_items(folder))
    timeline = build_timeline(folder, result.observed, exposure_windows(result.verdicts))
    timeline = with_opens_marked(timeline, _recorded_opened_by(config, folder))  # issue 18
    text = {"text": timeline.to_text, "json": lambda: to_json_text(timeline), "html": lambda: render_html(timeline)}[
        args.format
    ]()
    _write(text, args.output)
    return 0


def _report(args: argparse.Namespace, config: Config) -> int:
    from processor.forensics import breach_report, exposure_windows

    windows = exposure_windows(_history_replay(config, gap_ms=args.gap_ms).verdicts)
    recorded = {w.exposure_id: w for w in exposure_windows(_recorded_exposures(config))}
    match = next((w for w in windows if w.exposure_id == args.exposure_id), None) or recorded.get(args.exposure_id)
    if match is None:
        print(f"permwatch: no exposure {args.exposure_id} in the recorded history", file=sys.stderr)
        return 1
    # when it was detected is what the live run recorded, not when this replay ran
    live = recorded.get(match.exposure_id)
    detected = live.detected_at if live is not None else None
    _write(breach_report(match, detected_at=detected, decisions=_decisions_of(config, match.exposure_id)), args.output)
    return 0


def _breach_report(args: argparse.Namespace, config: Config) -> int:
    """Read the record (exposures, opens, the directory's uids) and write the exposure's Art. 33 report."""
    from permwatch.events import TOPIC_DIRECTORY, DecodeError, FsAccessEvent, decode
    from processor.breach_report import breach_facts, render_html, render_markdown, report_sections
    from processor.opens import opens_during_exposures, uid_names

    events = [e for e in _recorded_exposures(config) if e.exposure_id == args.exposure_id]
    if not events:
        print(f"permwatch: no exposure {args.exposure_id} in the recorded history", file=sys.stderr)
        return 1
    bus = open_bus(config.transport)
    try:
        decoded = []
        for record in bus.history([TOPIC_DIRECTORY, TOPIC_ACCESS]):
            try:
                decoded.append(decode(record.value))
            except DecodeError:
                continue  # not ours to judge here: the processor dead-letters what it cannot read
    finally:
        bus.close()
    accesses = [e for e in decoded if isinstance(e, FsAccessEvent) and e.folder == events[0].folder]
    opens = opens_during_exposures(events, accesses, uid_names(decoded))
    report = config.breach_report
    facts = breach_facts(events, opens, controller=report.controller, dpo=report.dpo, generated_at=datetime.now(UTC))
    sections = report_sections(facts)
    _write(render_html(sections) if args.format == "html" else render_markdown(sections), args.output)
    return 0


def _decisions_of(config: Config, exposure_id: str) -> list[Decision]:
    """What was decided about the exposure (respond, issue 19): for the report's Decisions section."""
    from processor.forensics import recorded_decisions

    bus = open_bus(config.transport)
    try:
        return recorded_decisions(bus, exposure_id)
    finally:
        bus.close()


def _archive(args: argparse.Namespace, config: Config) -> int:
    from permwatch.transport.embedded import EmbeddedBus

    if args.output.exists():
        print(f"permwatch: {args.output} exists; archive into a new file", file=sys.stderr)
        return 2
    source = open_bus(config.transport)
    target = EmbeddedBus(args.output)
    try:
        copied = target.append_records(source.history([*INPUT_TOPICS, TOPIC_EXPOSURES, TOPIC_ACCESS]))
    finally:
        source.close()
        target.close()
    print(f"archived {copied:,} records into {args.output}", file=sys.stderr)
    return 0


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)


# ---------------------------------------------------------------- the workshop store (issue 21)


def _snapshot(args: argparse.Namespace, config: Config) -> int:
    from processor.workshop_store import StoreUnusable, build, store_path

    bus = open_bus(config.transport)
    try:
        path = store_path(config.state_dir, bus)
        built = build(bus, path, every=args.every)
    except StoreUnusable as exc:
        print(f"permwatch: no workshop store for {config.transport.kind}: {exc}", file=sys.stderr)
        return 1
    finally:
        bus.close()
    print(
        f"indexed {built.records:,} records with {built.snapshots:,} snapshots into {built.path} "
        f"({built.bytes / 1e6:,.0f} MB) in {built.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0


def _workshop_store(config: Config, full_replay: bool) -> WorkshopStore | None:
    """The workshop store of the configured log, if there is one that describes the log as it is now."""
    from processor.workshop_store import StoreUnusable, WorkshopStore, store_path

    if full_replay:
        return None
    bus = open_bus(config.transport)
    try:
        path = store_path(config.state_dir, bus)
        if not path.exists():
            return None
        store = WorkshopStore(path, bus)
    except StoreUnusable as exc:
        print(f"permwatch: not using the workshop store: {exc}; replaying all history", file=sys.stderr)
        return None
    finally:
        bus.close()
    if store.tail:
        behind = f"{len(store.tail):,} record{'s' if len(store.tail) != 1 else ''}"
        print(
            f"permwatch: the workshop store is {behind} behind the log; replaying those after its last snapshot"
            " (permwatch snapshot brings it up to date)",
            file=sys.stderr,
        )
    return store


def _said(store: WorkshopStore, found: FromSnapshot) -> None:
    for rejected in found.rejected:
        print(f"permwatch: {rejected}; replaying from an older one", file=sys.stderr)
    result = found.result
    start = f"after the snapshot at record {found.start_ord:,}" if found.start_ord else "from the first record"
    print(
        f"replayed {result.events:,} of {store.record_count:,} events {start} in {result.seconds:.2f} s",
        file=sys.stderr,
    )


def _store_state(store: WorkshopStore, *, until: datetime) -> ReplayResult:
    try:
        found = store.replay_from_snapshot(until=until)
    finally:
        store.close()
    _said(store, found)
    return found.result


def _store_windows(
    store: WorkshopStore, *, label: str | None, since: datetime | None, until: datetime | None
) -> list[ExposureWindow]:
    try:
        windows = store.exposure_windows(label=label, since=since, until=until)
    finally:
        store.close()
    how = f"replaying only the {len(store.tail):,} records after it" if store.tail else "no replay"
    print(f"read {len(windows):,} exposure windows from the workshop store, {how}", file=sys.stderr)
    return windows


def _store_folder(store: WorkshopStore, folder: str, *, keep: Callable[[AnyEvent], object | None]) -> ReplayResult:
    try:
        result = store.folder_replay(folder, keep=keep)
    finally:
        store.close()
    print(
        f"replayed {result.events:,} of {store.record_count:,} events (the folder's index) in {result.seconds:.2f} s",
        file=sys.stderr,
    )
    return result
