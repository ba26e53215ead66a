"""``permwatch check-config --show-defaults``: every setting's default, as TOML a config file could hold.

Written from the config models themselves (and each sink kind's), so it cannot drift from what ``run`` uses.
Sections that are on by default are live TOML; optional ones (``[transport.kafka]``, ``[[fs]]``,
``[directory]``, ``[[ldap]]``, each sink kind, and every table a model holds that is unset by default:
``[labels.definitions.<name>.personal_data]``, ``[breach_report.controller]``, a Slack sink's ``routes``)
are commented out, with required keys shown as ``<required>``. Loading the live part gives exactly the
defaults (a unit test holds it to that, and that every key of every model is shown). A key set in a config
replaces its default, lists included: a list is never merged with its default.
"""

from __future__ import annotations

import json
import math
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from permwatch.cli.settings import config_model
from permwatch.config import LabelsConfig, TransportConfig

HEADER = """\
# permwatch: the default of every setting (permwatch check-config --show-defaults).
# Setting a key replaces its default; a list replaces the default list whole (never merged with it), so
# always_allowed_users = [] allows nobody beyond each label's own audience, and ["root", "backup"] keeps root.
# Commented tables are optional sections, off unless a config has them; <required> marks keys they need.
"""


def _literal(value: Any) -> str:
    """A TOML literal for a default value."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isinf(value)):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML literal for {value!r}")


def _is_model(value: Any) -> bool:
    return isinstance(value, BaseModel)


def _scalar_lines(model: type[BaseModel], values: dict[str, Any], *, commented: bool) -> list[str]:
    lines = []
    hash_ = "# " if commented else ""
    for name, info in model.model_fields.items():
        if info.exclude:
            continue  # refused keys (a literal password): never a setting
        value = values.get(name, _MISSING)
        if _holds_models(info.annotation):
            continue  # tables of their own, below (commented out when optional)
        note = _note(info)
        if value is _MISSING:
            lines.append(f"# {name} = <required>{note}")
        elif value is None:
            lines.append(f"# {name} = (unset){note}")
        else:
            lines.append(f"{hash_}{name} = {_literal(value)}{note}")
    return lines


def _holds_models(annotation: Any) -> bool:
    """Whether a field is a table (a model, a list of models or an optional one), not a plain value."""
    if isinstance(annotation, type):
        return issubclass(annotation, BaseModel)
    return any(_holds_models(arg) for arg in typing.get_args(annotation) if arg is not type(None))


def _is_model_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_model(v) for v in value)


_MISSING = object()


def _note(info: FieldInfo) -> str:
    return f"  # {' '.join(info.description.split())}" if info.description else ""


def _defaults_of(model: type[BaseModel]) -> dict[str, Any]:
    """Each field's default (``_MISSING`` left out: required)."""
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if info.is_required():
            continue
        values[name] = info.get_default(call_default_factory=True)
    return values


def _table(header: str, model: type[BaseModel], values: dict[str, Any], *, commented: bool) -> list[str]:
    lines = ["", f"{'# ' if commented else ''}{header}", *_scalar_lines(model, values, commented=commented)]
    prefix = header.strip("[]")
    for name, info in model.model_fields.items():
        value = values.get(name)
        if isinstance(value, BaseModel):
            lines += _table(f"[{prefix}.{name}]", type(value), dict(value), commented=commented)
        elif isinstance(value, list) and _is_model_list(value):
            for item in value:
                lines += _table(f"[[{prefix}.{name}]]", type(item), dict(item), commented=commented)
        elif not info.exclude and (unset := _unset_table(info.annotation)) is not None:
            # unset by default (None, [] or {}): shown as the optional table it would be, with its own defaults
            inner, shape = unset
            where = {
                "table": f"[{prefix}.{name}]",
                "array": f"[[{prefix}.{name}]]",
                "named": f"[{prefix}.{name}.<name>]",
            }
            lines += _table(where[shape], inner, _defaults_of(inner), commented=True)
    return lines


def _unset_table(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """The model a table-valued field holds and how: ``table`` (a model or an optional one), ``array`` (a list
    of them: ``[[…]]``) or ``named`` (a dict of them by name: ``[….<name>]``); None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, "table"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple) and args:
        found = _unset_table(args[0])
        return (found[0], "array") if found is not None else None
    if origin is dict and len(args) == 2:
        found = _unset_table(args[1])
        return (found[0], "named") if found is not None else None
    for arg in args:  # an optional model (Model | None)
        if arg is not type(None) and (found := _unset_table(arg)) is not None:
            return found
    return None


def render_defaults() -> str:
    """The defaults of every section as TOML; see the module docstring."""
    from alerts.registry import SINKS
    from collectors.registry import SECTIONS

    model = config_model()
    config = model()
    values = dict(config)
    out = [*HEADER.splitlines(), "", *_scalar_lines(model, values, commented=False)]
    out += _table("[transport]", TransportConfig, dict(config.transport), commented=False)  # [transport.kafka] too
    for name, section in SECTIONS.items():  # the collectors' tables, each typed by its collector: shared ones
        if section.always:
            out += _table(f"[{name}]", section.model, dict(values[name]), commented=False)
    for name, section in SECTIONS.items():  # ... and each collector kind's, optional
        if not section.always:
            header = f"[[{name}]]" if section.repeated else f"[{name}]"
            out += _table(header, section.model, _defaults_of(section.model), commented=True)
    out += _table("[labels]", LabelsConfig, dict(config.labels), commented=False)  # its definitions and rules too
    for name in ("processor", "alerts", "metrics", "breach_report"):
        out += _table(f"[{name}]", type(values[name]), dict(values[name]), commented=False)
    for kind, (sink_model, _factory) in SINKS.items():
        out += _table("[[alerts.sinks]]", sink_model, {**_defaults_of(sink_model), "kind": kind}, commented=True)
    return "\n".join(out) + "\n"
