"""Sensitivity labels: which folders are labelled, and with what audience.

A folder gets a label from (first match wins) its ``user.sensitivity`` xattr,
a marker file in it (``.sensitivity``, first line), or the first policy rule
whose glob matches its absolute path. The value of an xattr or marker names a
label defined in the policy; an unknown name is taken as the strictest label
(only the always-allowed may read) and logged, because a folder someone
marked sensitive must not go unjudged over a typo. The global always-allowed
users and groups are added to every label's audience. :class:`LabelPolicy`
remembers what it last announced per folder and announces only changes.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from functools import lru_cache

from permwatch.config import LabelsConfig
from permwatch.events import Label, LabelAssigned, Severity

log = logging.getLogger("permwatch.collectors.labels")
_MARKER_MAX_BYTES = 256


@lru_cache(maxsize=1024)
def _glob_regex(glob: str) -> re.Pattern[str]:
    parts = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            parts.append(".*")
            i += 2
        elif glob[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(parts) + r"\Z")


def path_glob_matches(path: str, glob: str) -> bool:
    """Shell-style path glob: ``*`` and ``?`` stay within one path component, ``**`` crosses them."""
    return _glob_regex(glob).match(path) is not None


class LabelPolicy:
    def __init__(self, config: LabelsConfig, *, source: str = "labels") -> None:
        self.config = config
        self.source = source
        self.labels = {name: self._label(name) for name in config.definitions}
        self._announced: dict[str, Label] = {}

    @property
    def marker_file(self) -> str:
        return self.config.marker_file

    def _label(self, name: str) -> Label:
        definition = self.config.definitions.get(name)
        groups = list(definition.allowed_groups) if definition else []
        users = list(definition.allowed_users) if definition else []
        return Label(
            name=name,
            severity=definition.severity if definition else Severity.CRITICAL,
            allowed_groups=tuple(dict.fromkeys(groups + self.config.always_allowed_groups)),
            allowed_users=tuple(dict.fromkeys(users + self.config.always_allowed_users)),
            alert_on_names=definition.alert_on_names if definition else True,
            personal_data=definition.personal_data if definition else None,
        )

    def label_for(self, path: str) -> tuple[Label | None, str]:
        named, origin = self._marked(path)
        if named is not None:
            label = self.labels.get(named)
            if label is None:
                log.warning(
                    "%s: %s names unknown label %r; judging it with the strictest audience", path, origin, named
                )
                label = self._label(named)
            return label, origin
        return self.label_by_rules(path), "policy"

    def label_by_rules(self, path: str) -> Label | None:
        """The label the policy's globs give ``path`` (no xattr or marker: what-if replays use this)."""
        for rule in self.config.rules:
            if path_glob_matches(path, rule.glob):
                return self.labels[rule.label]
        return None

    def _marked(self, path: str) -> tuple[str | None, str]:
        try:
            value = os.getxattr(path, self.config.xattr, follow_symlinks=False)
            name = value.decode("utf-8", "replace").strip()
            if name:
                return name, "xattr"
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                raise
        marker = os.path.join(path, self.config.marker_file)
        try:
            with open(marker, "rb") as fh:
                first = fh.read(_MARKER_MAX_BYTES).decode("utf-8", "replace").splitlines()
        except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
            return None, "policy"
        name = first[0].strip() if first else ""
        return (name or None), "marker"

    def observe(self, path: str) -> LabelAssigned | None:
        label, origin = self.label_for(path)
        previous = self._announced.get(path)
        if label == previous:
            return None
        if label is None:
            del self._announced[path]
            return LabelAssigned(path=path, label=None, origin="policy", source=self.source)
        self._announced[path] = label
        return LabelAssigned(path=path, label=label, origin=origin, source=self.source)  # type: ignore[arg-type]

    def forget(self, path: str) -> LabelAssigned | None:
        if self._announced.pop(path, None) is None:
            return None
        return LabelAssigned(path=path, label=None, origin="policy", source=self.source)
