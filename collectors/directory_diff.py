"""The difference between two directory snapshots, as the events that turn one into the other.

Directory sources (the YAML file, an LDAP server) hold the directory as a dict
of principal states keyed like the bus keys them. When a source learns a new
state of the whole directory, or of a few principals, :func:`diff` says which
principals changed, were created or went away, with the members a group gained
and lost, in the order the processor needs them: users before groups,
deletions last.
"""

from __future__ import annotations

from typing import Any

from permwatch.events import DirectoryGroup, DirectoryUser, Event

PrincipalStates = dict[str, DirectoryUser | DirectoryGroup]

# What a principal *is*, as opposed to how or when this event reports it.
_NOT_STATE = {"event_id", "observed_at", "change", "added", "removed", "source", "actor", "changed_at"}


def same_state(a: DirectoryUser | DirectoryGroup, b: DirectoryUser | DirectoryGroup) -> bool:
    """True when both describe the same principal state (ignoring event metadata)."""
    return type(a) is type(b) and a.model_dump(exclude=_NOT_STATE) == b.model_dump(exclude=_NOT_STATE)


def diff(old: PrincipalStates, new: PrincipalStates, *, source: str, initial: bool | None = None) -> list[Event]:
    """Events that turn ``old`` into ``new``: users before groups, deletions last.

    ``initial`` marks every event as part of a first snapshot (``change="snapshot"``);
    by default that is the case exactly when ``old`` is empty.
    """
    snapshot = not old if initial is None else initial
    out: list[Event] = []
    for key in sorted(new, key=lambda k: (isinstance(new[k], DirectoryGroup), k)):
        state = new[key]
        before = old.get(key)
        if before is not None and same_state(before, state):
            continue
        update: dict[str, Any] = {"source": source, "change": "created" if before is None else "modified"}
        if isinstance(state, DirectoryGroup):
            was = set(before.member_users + before.member_groups) if isinstance(before, DirectoryGroup) else set()
            now = set(state.member_users + state.member_groups)
            update["added"] = tuple(sorted(now - was))
            update["removed"] = tuple(sorted(was - now))
            if before is not None and was != now:
                update["change"] = "members"
        if snapshot:
            update["change"] = "snapshot"
        out.append(state.model_copy(update=update))
    for key in sorted(set(old) - set(new)):
        out.append(old[key].model_copy(update={"deleted": True, "change": "deleted", "source": source}))
    return out
