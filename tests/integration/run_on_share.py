"""``permwatch run`` on the embedded log over a real share, for the actor and open tests (#18)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration.respond_rig import Rig


@contextmanager
def permwatch_run(
    tmp_path: Path, share: Path, folder: Path, directory: dict[str, Any], extra: str = "", opens: str = "fanotify"
) -> Iterator[Path]:
    """An all-in-one run (the respond rig) labelling ``folder`` for ``ledningsgrupp``, with the fanotify actor and
    open sources (``opens``: which), alerts to JSONL; yields the alerts file."""
    labels = (
        '[labels.definitions.ledning]\nallowed_groups = ["ledningsgrupp"]\n'
        f'[[labels.rules]]\nglob = "{folder}"\nlabel = "ledning"\n'
    )
    rig = Rig(tmp_path, share, labels, extra=extra, fs=f'actors = "fanotify"\nopens = "{opens}"', directory=directory)
    with rig.running():
        yield rig.alerts
    assert "fanotify unavailable" not in rig.log.read_text()


def records(alerts: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in alerts.read_text().splitlines()] if alerts.exists() else []


def record_saying(alerts: Path, **expected: Any) -> dict[str, Any] | None:
    """The first record saying ``expected``, once there is one."""
    return next((r for r in records(alerts) if all(r.get(k) == v for k, v in expected.items())), None)
