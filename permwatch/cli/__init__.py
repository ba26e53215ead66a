"""The ``permwatch`` command: argument parsing and the one place that wires stages together.

User mistakes (bad config, missing files) end with one clear line on stderr
and exit status 2, never a traceback; an event log that cannot be used
(damaged, its disk full) ends with one line and exit status 1. ``run`` takes
SIGINT and SIGTERM as a request to stop from its first moment
(:mod:`permwatch.cli.stopping`): the console script imports this module
first thing, and it installs the handlers before importing anything else.
"""

from __future__ import annotations

import sys

from permwatch.cli.stopping import StopRequest

STOP = StopRequest()
"""The stop request of ``permwatch run``, installed as this module is imported by it."""
if sys.argv[1:2] == ["run"]:
    STOP.install()

import argparse  # noqa: E402 - after the signal handlers, on purpose
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

log = logging.getLogger("permwatch")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # On the handlers: a logger's own filters do not see what its children (kafka.net.transport…) log.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_one_line)


def _one_line(record: logging.LogRecord) -> bool:
    """The Kafka client logs a traceback for what it recovers from (a connection reset while a broker restarts, a
    bootstrap connection closed while a read was due): keep its one line, naming the exception."""
    if record.name.partition(".")[0] == "kafka" and record.exc_info and record.exc_info[1] is not None:
        record.msg = f"{record.getMessage()} ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        record.args = None
        record.exc_info = None
        record.exc_text = None
    return True


def main(argv: list[str] | None = None) -> int:
    stop = STOP
    if (sys.argv[1:] if argv is None else argv)[:1] == ["run"] and not stop.installed:
        stop.install()  # (called with its own argv) before the config and the stages are even imported
    parser = argparse.ArgumentParser(
        prog="permwatch", description="Notice when a restricted folder becomes readable by others."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run collectors, processor and alerts (or one role)")
    run.add_argument("--config", "-c", type=Path, required=True, help="TOML config file")
    run.add_argument("--role", choices=["all", "collector", "processor", "alerts"], default="all")

    check = sub.add_parser(
        "check-config",
        help="validate a config file and what it points at (directory file, roots, secrets) and exit",
    )
    check.add_argument("config", type=Path, nargs="?")
    check.add_argument("--scan", action="store_true", help="also count the folders each label labels on the tree")
    check.add_argument("--show-defaults", action="store_true", help="print every setting's default as TOML")
    check.add_argument(
        "--connect",
        action="store_true",
        help="also bind to each [[ldap]] source and search it once; one line each; non-zero exit on a failure",
    )

    demo = sub.add_parser("demo", help="replay the motivating incident in a temporary tree")
    demo.add_argument("--keep", action="store_true", help="keep the temporary tree and event log")

    from permwatch.cli.forensics import COMMANDS as FORENSICS
    from permwatch.cli.forensics import add_commands

    add_commands(sub)
    from permwatch.cli import respond  # respond (issue 19): ack, approve, revoke, revert, entitlements

    respond.add_commands(sub)
    args = parser.parse_args(argv)
    from permwatch.cli.settings import load_config
    from permwatch.config import ConfigError
    from permwatch.transport.base import EventLogError

    try:
        if args.command in FORENSICS:
            from permwatch.cli import forensics

            _setup_logging("warning")
            return forensics.run(args)
        if args.command in respond.COMMANDS:
            _setup_logging("warning")
            return respond.run(args)
        if args.command == "check-config":
            return _check_config(args.config, scan=args.scan, show_defaults=args.show_defaults, connect=args.connect)
        if args.command == "run":
            from permwatch.cli.checks import run_warnings, state_problems
            from permwatch.cli.wiring import run_roles, validate_stages

            config = load_config(args.config)
            validate_stages(config, args.config)
            if problems := state_problems(config, args.config):  # else a traceback from the first mkdir
                raise ConfigError("\n".join(problems))
            _setup_logging(config.log_level)
            for warning in run_warnings(config, args.config):
                log.warning("%s", warning)
            return run_roles(config, args.role, stop=stop)
        if args.command == "demo":
            from permwatch.cli.demo import run_demo

            _setup_logging("warning")
            return run_demo(keep=args.keep)
    except ConfigError as exc:
        print(f"permwatch: config error: {exc}", file=sys.stderr)
        return 2
    except EventLogError as exc:
        print(f"permwatch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 1  # pragma: no cover - argparse enforces a command


def _check_config(path: Path | None, *, scan: bool, show_defaults: bool, connect: bool = False) -> int:
    """Validate ``path`` as ``run`` would and check what it points at; warnings go to stderr, each one line."""
    from permwatch.cli.checks import check_world, describe_counts, scan_labels
    from permwatch.cli.settings import load_config
    from permwatch.cli.wiring import validate_stages
    from permwatch.config import ConfigError

    if show_defaults:
        from permwatch.cli.defaults import render_defaults

        print(render_defaults(), end="")
        if path is None:
            return 0
    if path is None:
        print("permwatch: check-config needs a config file (or --show-defaults)", file=sys.stderr)
        return 2
    config = load_config(path)
    validate_stages(config, path)
    found = check_world(config, path)
    for warning in found.warnings:
        print(f"permwatch: warning: {warning}", file=sys.stderr)
    if found.errors:
        raise ConfigError("\n".join(found.errors))
    if scan:
        logging.basicConfig(level=logging.WARNING, format="permwatch: warning: %(message)s", stream=sys.stderr)
        counts = scan_labels(config)
        for unread in counts.unread:
            print(f"permwatch: warning: {unread}", file=sys.stderr)
        for line in describe_counts(config, counts):
            print(line)
    warned = f" ({len(found.warnings)} warning{'' if len(found.warnings) == 1 else 's'})" if found.warnings else ""
    print(f"{path}: ok{warned}")
    if connect:
        from permwatch.cli.wiring import check_sources

        return check_sources(config)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
