"""The wire contract: every message permwatch puts on the bus, schema version 1.

Each message is one JSON object with a ``type`` discriminator and a
``schema_version``. Collectors publish filesystem, directory and label events;
the processor publishes exposure events; alert sinks read those. This module
is the one place the contract is defined and documented (see docs/events.md
for the prose version). Models are frozen: an event, once observed, does not
change. Each event knows its topic and its bus key, chosen so that the events
of one path (or one principal, or one labelled folder) stay in order on one
partition.
"""

from __future__ import annotations

import hashlib
import operator
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Literal[1] = 1
MAX_MESSAGE_BYTES = 1_000_000

TOPIC_FS = "fs"
TOPIC_DIRECTORY = "directory"
TOPIC_LABELS = "labels"
TOPIC_EXPOSURES = "exposures"
TOPIC_DEADLETTER = "deadletter"
TOPIC_DECISIONS = "decisions"
INPUT_TOPICS = (TOPIC_FS, TOPIC_DIRECTORY, TOPIC_LABELS, TOPIC_DECISIONS)
TOPIC_ACCESS = "access"
"""Opens of files in labelled folders (#18): its own topic, with its own retention, read by the workshop's report."""


def new_event_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def _is_none(value: object) -> bool:
    """``exclude_if`` of the optional fields added after version 1: left off the wire while unset, so older
    events keep their bytes. Field-level, so pydantic-core serialises the model itself (a wrap serializer
    sends every event through Python and doubled the cost of encoding an exposure)."""
    return value is None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_EVENT_ID = r"^[A-Za-z0-9._:-]+$"
# Numbers and flags on the wire are taken literally: true is not 1 and "5" is not 5.
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]


_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$")


def _iso_time(value: object) -> object:
    """Times on the wire are ISO 8601 date-times with an offset; a number or a bare date is a guess we refuse."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_TIME.match(value):
        return value
    raise ValueError("must be an ISO 8601 date and time with an offset, e.g. 2026-11-23T08:00:00Z")


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a UTC offset")
    return value.astimezone(UTC)


Time = Annotated[datetime, BeforeValidator(_iso_time), AfterValidator(_utc)]
"""A point in time: ISO 8601 with an offset on the wire, always UTC in memory (naive times cannot be compared)."""


def _check_path(path: str | None) -> str | None:
    """Paths on the wire are absolute and normalised: no empty, '.' or '..' components, no NUL."""
    if path is None:
        return None
    if not path.startswith("/"):
        raise ValueError("must be an absolute path")
    if "\x00" in path:
        raise ValueError("must not contain NUL")
    # a component is empty, '.' or '..' exactly when one of these lies between two slashes of path + '/'
    if path != "/" and ("//" in (ended := path + "/") or "/./" in ended or "/../" in ended):
        raise ValueError("must be normalised (no empty, '.' or '..' components, no trailing '/')")
    return path


class Event(_Frozen):
    """Fields every message carries."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=128, pattern=_EVENT_ID)
    observed_at: Time = Field(default_factory=utcnow)
    source: str = Field(default="", max_length=256, description="collector or processor id")

    @property
    def topic(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    @property
    def key(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


# ---------------------------------------------------------------- filesystem


class AclTag(StrEnum):
    USER_OBJ = "user_obj"
    USER = "user"
    GROUP_OBJ = "group_obj"
    GROUP = "group"
    MASK = "mask"
    OTHER = "other"


class AclEntry(_Frozen):
    """One POSIX ACL entry. ``perms`` is the rwx triple as bits (r=4, w=2, x=1)."""

    tag: AclTag
    qualifier: Int | None = Field(default=None, description="uid or gid for user/group")
    name: str | None = Field(default=None, description="resolved name, when known")
    perms: Int = Field(ge=0, le=7)

    def text(self) -> str:
        who = self.name if self.name is not None else ("" if self.qualifier is None else str(self.qualifier))
        return f"{_TAG_TEXT[self.tag]}:{who}:{_PERMS_TEXT[self.perms]}"


def perms_text(perms: int) -> str:
    return _PERMS_TEXT[perms & 0o7]


_PERMS_TEXT = tuple(
    "".join(ch if perms & bit else "-" for ch, bit in (("r", 4), ("w", 2), ("x", 1))) for perms in range(8)
)
_TAG_TEXT = {tag: {"user_obj": "user", "group_obj": "group"}.get(tag.value, tag.value) for tag in AclTag}


class Identity(_Frozen):
    """A numeric owner or group id with its name when the collector could resolve it."""

    id: Int
    name: str | None = None


class ObjectType(StrEnum):
    DIRECTORY = "directory"
    FILE = "file"
    SYMLINK = "symlink"
    OTHER = "other"


class FsKind(StrEnum):
    BASELINE = "baseline"
    CHANGED = "changed"
    CREATED = "created"
    MOVED = "moved"
    DELETED = "deleted"


AclKind = Literal["posix", "nt"]
"""The kinds of ACL a permission event can carry: ``posix`` alone, or ``nt``: the POSIX ACL *and* the Windows
(NT) ACL a Samba file server keeps for the path (:class:`NtAcl`), both enforced — or, read over SMB from a
server where nothing of ours runs (``NtAcl.source == "smb"``), the NT ACL alone."""


# ---------------------------------------------------------------- NT ACLs (issue 16): one block, additive to v1

Sid = Annotated[str, Field(pattern=r"^S-1-(\d{1,15}|0x[0-9A-F]{12})(-\d{1,10}){0,15}$", max_length=184)]
"""A Windows security identifier in its string form (MS-DTYP 2.4.2.1), e.g. ``S-1-5-11``."""


class NtAceFlag(StrEnum):
    """ACE header flags that matter for access and inheritance (MS-DTYP 2.4.4.1)."""

    OBJECT_INHERIT = "object_inherit"
    CONTAINER_INHERIT = "container_inherit"
    NO_PROPAGATE_INHERIT = "no_propagate_inherit"
    INHERIT_ONLY = "inherit_only"
    INHERITED = "inherited"


class NtAce(_Frozen):
    """One DACL entry in DACL order. ``mask`` is the raw access mask (generic bits unmapped); ``conditional``
    marks an object or callback ACE, whose condition permwatch does not evaluate (an allow counts, a deny
    does not: the side of exposure)."""

    type: Literal["allow", "deny"]
    flags: tuple[NtAceFlag, ...] = ()
    mask: Int = Field(ge=0, le=0xFFFFFFFF)
    trustee: Sid
    conditional: Bool = False


class NtAcl(_Frozen):
    """The Windows ACL Samba serves for a path over SMB.

    ``source`` says where it comes from: ``stored`` (the ``security.NTACL`` blob, valid by Samba's stale-blob
    rule: owner, group and DACL are given), ``posix`` (no blob, or a stale one: Samba serves an ACL it maps
    from the POSIX ACL, so the POSIX part alone decides) or ``unreadable`` (a blob that does not decode;
    ``error`` says why; readers judge the path by its POSIX part and say it is unreadable). ``dacl`` is None
    for a null DACL when ``dacl_present`` (everyone has every right); an empty tuple admits nobody.

    ``smb``: the descriptor a file server served over SMB to the remote collector (a Windows server or a NAS
    where nothing of ours runs). The server's own check decides alone: the event has no POSIX part.
    ``bypass_traverse`` is given exactly then: true where everyone may pass through folders without a traverse
    right (Windows' default, the bypass-traverse privilege), false where every ancestor must grant it. An ``smb``
    ACL with ``error`` and no descriptor: the server would not give it or it did not decode; readers are then
    everybody, each grant saying so, until it is read.
    """

    source: Literal["stored", "posix", "unreadable", "smb"]
    owner: Sid | None = None
    group: Sid | None = None
    dacl_present: Bool = False
    dacl: tuple[NtAce, ...] | None = None
    error: str | None = Field(default=None, max_length=300)
    bypass_traverse: Bool | None = Field(default=None, exclude_if=_is_none)

    @model_validator(mode="after")
    def _consistent(self) -> NtAcl:
        descriptor = self.dacl_present or self.dacl is not None or self.owner or self.group
        if self.source not in ("stored", "smb") and descriptor:
            raise ValueError(f"an NT ACL from {self.source!r} carries no descriptor of its own")
        if self.source == "unreadable" and self.error is None:
            raise ValueError("an unreadable NT ACL says why (error)")
        if self.error is not None and (self.source not in ("unreadable", "smb") or descriptor):
            raise ValueError("error is given only when the NT ACL is unreadable, in place of a descriptor")
        if not self.dacl_present and self.dacl is not None:
            raise ValueError("a DACL needs dacl_present")
        if (self.source == "smb") != (self.bypass_traverse is not None):
            raise ValueError("bypass_traverse is given exactly when the NT ACL was read over SMB")
        return self

    @property
    def remote(self) -> bool:
        """Read over SMB from a server whose own check is all there is (no POSIX part)."""
        return self.source == "smb"


# ---------------------------------------------------------------- end of the NT ACL block


# --------------------------------------------------------------- actors (#18)

ActorConfidence = Literal["pidfd", "proc", "unresolved", "smb_audit", "audit"]
"""How sure a collector is of who made a change: ``pidfd`` (fanotify's pidfd showed the process was still the
one behind the event when its uid was read), ``proc`` (best effort: its pid alone, read from /proc),
``unresolved`` (the process had gone before it could be asked), ``smb_audit`` (Samba's vfs_full_audit names the
SMB user), ``audit`` (the kernel audit log's login uid)."""


class Actor(_Frozen):
    """Who made a permission change (or opened a file): the user, the process, and how sure that is.

    ``name`` and ``uid`` are absent when unresolved; ``process`` is the command's name (never its arguments).
    """

    name: str | None = Field(default=None, max_length=256)
    uid: Int | None = None
    process: str | None = Field(default=None, max_length=64)
    pid: Int | None = None
    confidence: ActorConfidence

    def text(self) -> str | None:
        """The actor as a record names it: the user name, else ``uid N``; None when unresolved."""
        if self.name:
            return self.name
        return None if self.uid is None else f"uid {self.uid}"


class FsPermissionEvent(Event):
    """The permission state of one path as the collector read it.

    ``acl`` holds the full access ACL (the minimal ACL derived from the mode when
    the path has no extended ACL), ``default_acl`` the default ACL of a
    directory (empty when none). For ``deleted`` the permission fields are
    absent; for ``moved`` ``old_path`` names where it was. ``acl_kind`` says
    which kind of ACL the two hold; ``"posix"`` is left off the wire, so a
    POSIX event is byte for byte what version 1 always was.
    """

    type: Literal["fs.permission"] = "fs.permission"
    kind: FsKind
    path: str = Field(min_length=1, max_length=4096)
    old_path: str | None = Field(default=None, max_length=4096)
    object_type: ObjectType = ObjectType.DIRECTORY
    owner: Identity | None = None
    group: Identity | None = None
    mode: Int | None = Field(default=None, ge=0, le=0o7777)
    acl: tuple[AclEntry, ...] = ()
    default_acl: tuple[AclEntry, ...] = ()
    acl_kind: AclKind = Field(default="posix", exclude_if=lambda kind: kind == "posix")
    nt_acl: NtAcl | None = Field(
        default=None, exclude_if=_is_none, description="with acl_kind 'nt': the NT ACL Samba serves"
    )
    actor: Actor | None = Field(
        default=None, exclude_if=_is_none, description="who made the change, when a collector could tell (#18)"
    )

    _paths = field_validator("path", "old_path")(_check_path)

    @model_validator(mode="after")
    def _state_unless_deleted(self) -> FsPermissionEvent:
        remote = self.nt_acl is not None and self.nt_acl.remote
        posix = (self.mode, self.owner, self.group)
        # `is None`, not `None in posix`: that compares None with each model through pydantic's __eq__
        missing = self.mode is None or self.owner is None or self.group is None
        if self.kind is not FsKind.DELETED and not remote and missing:
            raise ValueError(f"a {self.kind.value} event needs mode, owner and group")
        if remote and (posix != (None, None, None) or self.acl or self.default_acl):
            raise ValueError("an NT ACL read over SMB comes without a POSIX part (mode, owner, group, acl)")
        if self.kind is FsKind.MOVED and self.old_path is None:
            raise ValueError("a moved event needs old_path")
        if self.nt_acl is not None and self.acl_kind != "nt":
            raise ValueError("nt_acl needs acl_kind 'nt'")
        if self.acl_kind == "nt" and self.nt_acl is None and self.kind is not FsKind.DELETED:
            raise ValueError("acl_kind 'nt' needs nt_acl")
        return self

    @property
    def topic(self) -> str:
        return TOPIC_FS

    @property
    def key(self) -> str:
        """The path: the finest key, for a reader with one partition. On a partitioned bus an fs event travels
        under its *unit*, which needs the watched roots: :class:`permwatch.keys.FsKeys` chooses it."""
        return self.path


MAX_BATCH = 500


class FsBatch(Event):
    """Several permission events of one *unit* (a folder directly below a watched root, see
    permwatch/keys.py), oldest first: one message instead of hundreds when a burst (an IT update's
    ``setfacl -R``, a rescan after an overflow) touches a whole tree. Keyed by the unit like the events
    it carries, so one path's order holds. Readers apply ``events`` in order, as if each came alone.
    """

    type: Literal["fs.batch"] = "fs.batch"
    unit: str = Field(min_length=1, max_length=4096)
    events: tuple[FsPermissionEvent, ...] = Field(min_length=1, max_length=MAX_BATCH)

    _unit = field_validator("unit")(_check_path)

    @model_validator(mode="after")
    def _inside_unit(self) -> FsBatch:
        prefix = self.unit.rstrip("/") + "/"
        for event in self.events:  # (a move's old_path may lie in another unit: that unit hears of it too)
            if event.path != self.unit and not event.path.startswith(prefix):
                raise ValueError("a batch carries a path outside its unit")
        return self

    @property
    def topic(self) -> str:
        return TOPIC_FS

    @property
    def key(self) -> str:
        return self.unit


class ScanCompleted(Event):
    """A collector finished a (re)scan of ``root``; ``reason`` says why it ran."""

    type: Literal["fs.scan_completed"] = "fs.scan_completed"
    root: str = Field(min_length=1, max_length=4096)

    _root = field_validator("root")(_check_path)
    reason: Literal["baseline", "overflow", "spool_overflow", "manual", "reconcile"] = "baseline"
    paths_seen: Int = Field(ge=0)
    paths_changed: Int = Field(ge=0)
    seconds: float = Field(ge=0)

    @property
    def topic(self) -> str:
        return TOPIC_FS

    @property
    def key(self) -> str:
        return self.root


# ---------------------------------------------------------------- Samba share-level access (issue 16, item 6)


class SambaShare(Event):
    """One share of a Samba file server as smbd admits users to it, before any file's ACL is asked: the share's
    ``valid users`` / ``invalid users`` (entries as smb.conf writes them: ``name``, ``@group``, ``+group``, a SID)
    and its share security descriptor (``sharesec``; Samba serves Everyone FULL when none is stored).

    ``acl`` is None only with ``error`` (the descriptor could not be read: judged as not narrowing anybody, and
    said). ``deleted``: the share is gone (or moved to another path: the old path is told it is gone). Keyed
    like an ``fs.permission`` event of ``path``, so it travels with the paths it gates.
    """

    type: Literal["smb.share"] = "smb.share"
    name: str = Field(min_length=1, max_length=256)
    path: str = Field(min_length=1, max_length=4096)
    valid_users: tuple[Annotated[str, Field(min_length=1, max_length=256)], ...] = ()
    invalid_users: tuple[Annotated[str, Field(min_length=1, max_length=256)], ...] = ()
    acl: tuple[NtAce, ...] | None = None
    deleted: Bool = False
    error: str | None = Field(default=None, max_length=300)

    _path = field_validator("path")(_check_path)

    @model_validator(mode="after")
    def _consistent(self) -> SambaShare:
        if not self.deleted and (self.acl is None) != (self.error is not None):
            raise ValueError("a share carries its acl, or the error that kept it from being read")
        return self

    @property
    def topic(self) -> str:
        return TOPIC_FS

    @property
    def key(self) -> str:
        """The path, like a permission event's: :class:`permwatch.keys.FsKeys` routes it to the path's unit."""
        return self.path


# ---------------------------------------------------------------- end of the Samba share block


# ------------------------------------------------------------------ directory


class DirectoryUser(Event):
    """The full current state of one user account (or its deletion).

    Keyed by ``dn`` (or ``user:<name>``) so a compacted topic keeps the latest state.
    """

    type: Literal["directory.user"] = "directory.user"
    name: str = Field(min_length=1, max_length=256)
    dn: str | None = Field(default=None, max_length=1024)
    uid: Int | None = None
    primary_gid: Int | None = None
    disabled: Bool = False
    deleted: Bool = False
    change: str = Field(default="snapshot", max_length=64, description="created|modified|disabled|deleted|snapshot")
    actor: str | None = Field(default=None, max_length=1024, description="who made the change, when known")
    changed_at: Time | None = None
    sid: Sid | None = Field(
        default=None, exclude_if=_is_none, description="the account's SID (AD objectSid), left off when unknown"
    )
    primary_group_sid: Sid | None = Field(
        default=None,
        exclude_if=_is_none,
        description="the SID of its primary group (AD: domain SID + primaryGroupID, 513 = Domain Users)",
    )

    @property
    def topic(self) -> str:
        return TOPIC_DIRECTORY

    @property
    def key(self) -> str:
        return self.dn or f"user:{self.name}"


class DirectoryGroup(Event):
    """The full current state of one group: direct user members and nested groups."""

    type: Literal["directory.group"] = "directory.group"
    name: str = Field(min_length=1, max_length=256)
    dn: str | None = Field(default=None, max_length=1024)
    gid: Int | None = None
    member_users: tuple[str, ...] = ()
    member_groups: tuple[str, ...] = ()
    deleted: Bool = False
    change: str = Field(default="snapshot", max_length=64, description="created|members|renamed|deleted|snapshot")
    added: tuple[str, ...] = Field(default=(), description="members added by this change")
    removed: tuple[str, ...] = Field(default=(), description="members removed by this change")
    actor: str | None = Field(default=None, max_length=1024)
    changed_at: Time | None = None
    sid: Sid | None = Field(
        default=None, exclude_if=_is_none, description="the group's SID (AD objectSid), left off when unknown"
    )

    @property
    def topic(self) -> str:
        return TOPIC_DIRECTORY

    @property
    def key(self) -> str:
        return self.dn or f"group:{self.name}"


# --------------------------------------------------------------------- labels


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class PersonalData(_Frozen):
    """What personal data a labelled folder holds, as its data owner states it: the facts GDPR Art. 33(3)(a)
    asks of a breach report (#18). Every field is optional; the report says what is not stated."""

    data_categories: tuple[str, ...] = Field(default=(), description="e.g. 'payroll', 'health records'")
    subject_categories: tuple[str, ...] = Field(default=(), description="e.g. 'employees', 'patients'")
    approx_subjects: Int | None = Field(default=None, ge=0, description="approximate number of data subjects")
    approx_records: Int | None = Field(default=None, ge=0, description="approximate number of records")
    special_categories: tuple[str, ...] = Field(default=(), description="Art. 9 categories, e.g. 'health'")
    data_owner: str | None = Field(default=None, max_length=256, description="who answers for the data")


class Label(_Frozen):
    """A sensitivity label: who may read a folder and how bad it is when others can."""

    name: str = Field(min_length=1, max_length=128)
    severity: Severity = Severity.HIGH
    allowed_groups: tuple[str, ...] = ()
    allowed_users: tuple[str, ...] = ()
    alert_on_names: Bool = Field(
        default=True, description="false: exposures of names only are recorded, but the alerts stage skips them"
    )
    # -- breach-report facts (#18): left off the wire when absent, so a label without them is version 1's bytes
    personal_data: PersonalData | None = Field(default=None, exclude_if=_is_none)


class LabelAssigned(Event):
    """``label`` now governs ``path`` and everything beneath it; ``None`` removes it."""

    type: Literal["label.assigned"] = "label.assigned"
    path: str = Field(min_length=1, max_length=4096)

    _path = field_validator("path")(_check_path)
    label: Label | None
    origin: Literal["policy", "xattr", "marker"] = "policy"

    @property
    def topic(self) -> str:
        return TOPIC_LABELS

    @property
    def key(self) -> str:
        return self.path


# ---------------------------------------------------------------- access (#18)


class FsAccessEvent(Event):
    """Someone opened a path in a labelled folder: who, which path, when (``observed_at``), how, and whether
    it was granted. Recorded for labelled folders only, never with the file's contents."""

    type: Literal["fs.access"] = "fs.access"
    path: str = Field(min_length=1, max_length=4096)
    folder: str = Field(min_length=1, max_length=4096, description="the labelled folder the path lies in")
    actor: Actor
    how: Literal["local", "smb"] = "local"
    granted: Bool = True

    _paths = field_validator("path", "folder")(_check_path)

    @property
    def topic(self) -> str:
        return TOPIC_ACCESS

    @property
    def key(self) -> str:
        return self.folder


# ------------------------------------------------------------------ exposures


class ExposureStatus(StrEnum):
    OPENED = "opened"
    CHANGED = "changed"
    CLOSED = "closed"


class ExposureKind(StrEnum):
    """What outsiders can read: contents (a file, or a folder they can enter: ``r-x``), or only names (a folder
    they can list but not enter: ``r`` without ``x``)."""

    CONTENTS = "contents"
    NAMES = "names"


class Grant(_Frozen):
    """How a set of outsiders can read: through which ACL entry and group chain.

    ``group`` is the group the people are direct members of (None for an entry
    naming a user, or for ``other``); ``chain`` lists the groups from that group
    up to the one the ACL entry names.
    """

    entry: str = Field(description="the ACL entry that grants read, e.g. 'group:alla', 'group::' (owning), 'other::'")
    group: str | None = None
    chain: tuple[str, ...] = ()
    user: str | None = None
    people: Int = Field(ge=0)


class Approval(_Frozen):
    """An approval in force on an exposure as the processor judged it (on :class:`ExposureEvent`)."""

    by: str = Field(min_length=1, max_length=256)
    reason: str | None = Field(default=None, max_length=1000)
    until: Time
    widened: Bool = Field(
        default=False, description="true: more groups or people can read than when it was approved; alerted"
    )


class ExposureEvent(Event):
    """An exposure of a labelled folder opened, changed or closed."""

    type: Literal["exposure"] = "exposure"
    exposure_id: str = Field(min_length=1, max_length=128, pattern=_EVENT_ID)
    sequence: Int = Field(ge=0, description="0 for opened, +1 for every later event")
    status: ExposureStatus
    kind: ExposureKind = Field(
        default=ExposureKind.CONTENTS,
        description="contents: an outsider can read a file or enter a folder (r-x); names: only list folders, "
        "not enter them (closed: the widest it was)",
    )
    folder: str = Field(min_length=1, max_length=4096)
    label: Label
    people: Int = Field(ge=0, description="people outside the label who can read")
    groups: tuple[str, ...] = Field(default=(), description="groups whose members can now read")
    users: tuple[str, ...] = Field(
        default=(), description="outsiders by name, sorted, the first processor.max_users_listed of them"
    )
    users_truncated: Bool = Field(default=False, description="true when users is cut: more than it names can read")
    grants: tuple[Grant, ...] = ()
    paths_affected: Int = Field(ge=0)
    sample_paths: tuple[str, ...] = ()
    cause_event_ids: tuple[str, ...] = ()
    actor: str | None = None
    opened_at: Time
    closed_at: Time | None = None
    duration_seconds: float | None = None
    detected_at: Time = Field(default_factory=utcnow)
    # -- who changed it (#18): left off the wire at their defaults, so records without them stay version 1's bytes
    actor_confidence: ActorConfidence | None = Field(
        default=None, exclude_if=_is_none, description="how sure the collector was of ``actor`` (see Actor.confidence)"
    )
    actor_unresolved: Int = Field(
        default=0,
        ge=0,
        exclude_if=operator.not_,
        description="cause events of this change whose actor the collector could not resolve",
    )
    # -- respond (issue 19): left off the wire at their defaults, so older records stay byte for byte
    approval: Approval | None = Field(
        default=None, exclude_if=_is_none, description="the approval in force when judged, if any"
    )
    preexisting: Bool = Field(
        default=False, exclude_if=operator.not_, description="found by the first baseline scan of its root"
    )

    _folder = field_validator("folder")(_check_path)

    @property
    def alerting(self) -> bool:
        """False for what an approval in force covers: a ``changed`` within what was approved."""
        return not (self.status is ExposureStatus.CHANGED and self.approval is not None and not self.approval.widened)

    @property
    def topic(self) -> str:
        return TOPIC_EXPOSURES

    @property
    def key(self) -> str:
        return self.folder


# ------------------------------------------------------------------ decisions (issue 19)


class DecisionAction(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    APPROVE = "approve"
    REVOKE = "revoke"
    REVERT_REQUESTED = "revert_requested"
    REVERTED = "reverted"
    REVERT_REFUSED = "revert_refused"
    REVERT_FAILED = "revert_failed"  # a change failed part way: ``reason`` says which, ``changes`` what was made


class Decision(Event):
    """What a person (or the automatic remediation) decided about an exposure: topic ``decisions``.

    Keyed by the folder, like the folder's exposure events, so they stay in order on one partition.
    ``approve`` needs ``until``; ``reverted`` lists the ``changes`` applied (as setfacl/chmod commands).
    """

    type: Literal["decision"] = "decision"
    action: DecisionAction
    exposure_id: str = Field(min_length=1, max_length=128, pattern=_EVENT_ID)
    folder: str = Field(min_length=1, max_length=4096)
    by: str = Field(min_length=1, max_length=256, description="who decided: a user name, a Slack user, 'automatic'")
    via: Literal["cli", "slack", "automatic"] = "cli"
    reason: str | None = Field(default=None, max_length=1000)
    until: Time | None = Field(default=None, description="approve: when the approval expires")
    changes: tuple[str, ...] = Field(default=(), description="reverted: the commands that restored the folder")

    _folder = field_validator("folder")(_check_path)

    @model_validator(mode="after")
    def _approve_has_until(self) -> Decision:
        if self.action is DecisionAction.APPROVE and self.until is None:
            raise ValueError("an approve decision needs until")
        return self

    @property
    def topic(self) -> str:
        return TOPIC_DECISIONS

    @property
    def key(self) -> str:
        return self.folder


def exposure_id_for(folder: str, label: str, cause_event_id: str) -> str:
    """A stable id for an exposure: the same folder, label and cause give the same id."""
    digest = hashlib.sha256(f"{folder}\0{label}\0{cause_event_id}".encode()).hexdigest()
    return f"exp-{digest[:20]}"


def exposure_event_id(exposure_id: str, sequence: int) -> str:
    return f"{exposure_id}.{sequence}"


class DeadLetter(_Frozen):
    """A message a stage could not handle, kept whole with the reason (topic ``deadletter``)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    type: Literal["deadletter"] = "deadletter"
    reason: str
    stage: str
    topic: str
    partition: Int
    offset: Int
    key: str | None
    timestamp_ms: Int
    value_b64: str = Field(description="the original bytes, base64")
    received_at: Time = Field(default_factory=utcnow)


# ------------------------------------------------------------------ opens marked live (issue 18)


class ExposureOpenedBy(Event):
    """Someone outside the label opened a path of a folder while its exposure was open: the live processor's mark
    of an ``fs.access`` record, on the ``exposures`` topic, keyed by the folder so it stays in order with the
    exposure's own events. ``observed_at`` is the open's time (the access record's); never a file's contents."""

    type: Literal["exposure.opened_by"] = "exposure.opened_by"
    exposure_id: str = Field(min_length=1, max_length=128, pattern=_EVENT_ID)
    folder: str = Field(min_length=1, max_length=4096)
    path: str = Field(min_length=1, max_length=4096)
    who: str = Field(min_length=1, max_length=256, description="the directory's name for the opener, else 'uid N'")
    outsider: Bool | None = Field(
        default=True, description="True: among the outsiders who could read; None: the list was cut, cannot tell"
    )
    actor: Actor
    how: Literal["local", "smb"] = "local"
    access_event_id: str = Field(min_length=1, max_length=128, pattern=_EVENT_ID)
    detected_at: Time = Field(default_factory=utcnow)

    _paths = field_validator("path", "folder")(_check_path)

    @property
    def topic(self) -> str:
        return TOPIC_EXPOSURES

    @property
    def key(self) -> str:
        return self.folder


def opened_by_event_id(exposure_id: str, access_event_id: str) -> str:
    """The mark's id: the same exposure and access record give the same id (a restart re-marks nothing new)."""
    return f"{exposure_id}.open.{hashlib.sha256(access_event_id.encode()).hexdigest()[:20]}"


# -------------------------------------------------------------------- decoding

AnyEvent = Annotated[
    FsPermissionEvent
    | FsBatch
    | ScanCompleted
    | DirectoryUser
    | DirectoryGroup
    | LabelAssigned
    | ExposureEvent
    | FsAccessEvent
    | Decision
    | SambaShare
    | ExposureOpenedBy,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


def unbatched(event: AnyEvent) -> tuple[AnyEvent, ...]:
    """The events a message carries, in order: a batch's events, or the event itself."""
    return event.events if isinstance(event, FsBatch) else (event,)


class DecodeError(ValueError):
    """A message that is not a valid permwatch event; ``reason`` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(event: Event) -> bytes:
    return event.model_dump_json(exclude_none=False).encode()


def decode(raw: bytes | None) -> AnyEvent:
    """Parse one message, or raise :class:`DecodeError` saying in one line why not."""
    if raw is None:
        raise DecodeError("empty message (tombstone)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise DecodeError(f"message too large: {len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise DecodeError(_one_line(exc)) from None


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _one_line(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    parts = [str(part) for part in first["loc"]]
    if first["type"] == "extra_forbidden" and parts and not _PLAIN_NAME.fullmatch(parts[-1]):
        parts[-1] = "<unknown field>"  # the message chose that name: markup or an escape must not reach a log
    loc = ".".join(parts) or "<message>"
    if parts[-1:] == ["schema_version"] and first["type"] != "extra_forbidden":  # 2, "1", 2**64: not version 1
        return "unsupported schema_version (this build reads version 1)"
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return "unknown or missing event type"  # the message's own 'type' value is not echoed
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return _printable(f"invalid {loc}: {first['msg']}{more}")


def _printable(text: str, limit: int = 300) -> str:
    """One line of plain characters: reasons end up in logs, and a message must not write into them."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
