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

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", type=Path)

    demo = sub.add_parser("demo", help="replay the motivating incident in a temporary tree")
    demo.add_argument("--keep", action="store_true", help="keep the temporary tree and event log")

    from permwatch.cli.forensics import COMMANDS as FORENSICS
    from permwatch.cli.forensics import add_commands

    add_commands(sub)
    args = parser.parse_args(argv)
    from permwatch.config import ConfigError, load_config
    from permwatch.transport.base import EventLogError

    try:
        if args.command in FORENSICS:
            from permwatch.cli import forensics

            _setup_logging("warning")
            return forensics.run(args)
        if args.command == "check-config":
            from permwatch.cli.wiring import validate_stages

            config = load_config(args.config)
            validate_stages(config, args.config)
            print(f"{args.config}: ok")
            return 0
        if args.command == "run":
            from permwatch.cli.wiring import run_roles, validate_stages

            config = load_config(args.config)
            validate_stages(config, args.config)
            _setup_logging(config.log_level)
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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
