"""Whether a checkpoint still fits the event log it is about to be replayed against.

A checkpoint's offsets mean something only in the log they were read from. A
log that was emptied, replaced by another (the embedded log's ``log_id``
differs, or a Kafka topic lost partitions) or put back to an older copy (its
end lies before the checkpoint's offsets) would have the processor skip
records it never judged, or judge new records as old ones: :func:`check_fits`
raises :class:`LogMismatch` naming the log and what is wrong, and the
processor rebuilds from the log's history instead. Kafka has no log id here
(the partitions' offset ranges are checked only): topics deleted and made
again are found once they hold fewer records than the checkpoint covers. Records deleted below the
checkpoint's offsets (a finite retention) are no reason to rebuild: the
checkpoint holds what they said, which history no longer can.
"""

from __future__ import annotations

from collections.abc import Mapping

from permwatch.transport.base import LogExtent


class LogMismatch(Exception):
    """The log is not the one (or not as far along as the one) the checkpoint was written for."""


def check_fits(
    offsets: Mapping[tuple[str, int], int],
    saved_log_id: str | None,
    log: LogExtent,
) -> None:
    """Raise :class:`LogMismatch` unless ``offsets`` (a checkpoint's, written for log ``saved_log_id``) fit
    ``log`` as it is now. A log that cannot say now (a broker out of reach) is taken at the checkpoint's word."""
    if not offsets:
        return
    where = log.describe()
    ranges = log.offset_ranges(sorted({topic for topic, _ in offsets}))
    if ranges is None:
        return
    behind = {tp: offset for tp, offset in offsets.items() if tp in ranges and offset > ranges[tp][1]}
    if behind and all(first >= end for first, end in ranges.values()):
        raise LogMismatch(f"{where} holds no records, the checkpoint covers {_covered(offsets)}: it was emptied")
    current = log.log_id
    if current is not None and saved_log_id != current:
        raise LogMismatch(
            f"{where} is not the log the checkpoint was written for (log id {saved_log_id or 'not recorded'}, "
            f"this one {current}): it was replaced"
        )
    missing = sorted(tp for tp in offsets if tp not in ranges)
    if missing:
        raise LogMismatch(f"{where} has no partition {_names(missing)}: it was replaced")
    if behind:
        ends = ", ".join(
            f"{t}/{p} ends at {ranges[t, p][1]}, checkpoint at {o}" for (t, p), o in sorted(behind.items())
        )
        raise LogMismatch(f"{where} is older than the checkpoint ({ends}): it was put back or replaced")


def _covered(offsets: Mapping[tuple[str, int], int]) -> str:
    return ", ".join(f"{t}/{p} up to {o}" for (t, p), o in sorted(offsets.items()))


def _names(partitions: list[tuple[str, int]]) -> str:
    return ", ".join(f"{t}/{p}" for t, p in partitions)
