"""docs/events.md keeps in step with permwatch/events.py: every field documented, every example decodes.

The page has one section per model, headed ``... (ClassName)``; the envelope's fields are documented once,
under ``Envelope (Event)``, and every other field under the model that declares it, as a row of a table
whose first column is ``Field``. Enum and literal values appear in their model's section. Every fenced
``json`` block is a message exactly as ``encode`` writes it, placed in its type's section.
"""

from __future__ import annotations

import base64
import enum
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from permwatch.events import (
    MAX_BATCH,
    MAX_MESSAGE_BYTES,
    TOPIC_DEADLETTER,
    TOPIC_DIRECTORY,
    TOPIC_EXPOSURES,
    TOPIC_FS,
    TOPIC_LABELS,
    AnyEvent,
    DeadLetter,
    DecodeError,
    Event,
    ExposureEvent,
    ExposureStatus,
    decode,
    exposure_event_id,
    exposure_id_for,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_FENCE = re.compile(r"^```(\w*)\s*$")
_FIELD_ROW = re.compile(r"^\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|")


@dataclass(frozen=True)
class Section:
    level: int
    title: str
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class Example:
    line: int
    raw: str
    section: str
    """The title of the nearest heading of level 3 or above the block lies in."""


def _event_models() -> list[type[Event]]:
    union = typing.get_args(AnyEvent)[0]
    return list(typing.get_args(union))


def _choices(annotation: Any) -> list[str]:
    """The string values a field admits, for enum and literal fields (optional ones included)."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(member.value) for member in annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return [arg for arg in typing.get_args(annotation) if isinstance(arg, str)]
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return [value for arg in typing.get_args(annotation) for value in _choices(arg)]
    return []


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _nested_models(arg)]


def _documented_models() -> list[type[BaseModel]]:
    """Every event type, the dead letter, and every model they contain (ACL entries, labels, grants, ...)."""
    found: list[type[BaseModel]] = [*_event_models(), DeadLetter]
    for model in found:  # grows while it is walked: nested models of nested models
        for info in model.model_fields.values():
            for nested in _nested_models(info.annotation):
                if nested not in found:
                    found.append(nested)
    return found


def _own_fields(model: type[BaseModel]) -> list[str]:
    if issubclass(model, Event):
        return [name for name in model.model_fields if name not in Event.model_fields]
    return list(model.model_fields)


def _parse(text: str) -> tuple[list[Section], list[Example]]:
    sections: list[Section] = []
    examples: list[Example] = []
    current = Section(0, "", [])
    major = ""
    fence: str | None = None
    block: list[str] = []
    block_start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is not None:
            current.lines.append(line)
            if _FENCE.match(line):
                if fence == "json":
                    examples.append(Example(block_start, "\n".join(block), major))
                fence = None
            else:
                block.append(line)
            continue
        opening = _FENCE.match(line)
        heading = _HEADING.match(line)
        if opening:
            fence, block, block_start = opening.group(1), [], number
            current.lines.append(line)
        elif heading:
            current = Section(len(heading.group(1)), heading.group(2), [])
            sections.append(current)
            if current.level <= 3:
                major = current.title
        else:
            current.lines.append(line)
    assert fence is None, "docs/events.md has an unclosed code fence"
    return sections, examples


def _section_of(sections: list[Section], model: type[BaseModel]) -> Section:
    """The section headed ``... (Model)``, its heading and subsections included."""
    marker = f"({model.__name__})"
    starts = [i for i, s in enumerate(sections) if s.title.endswith(marker)]
    assert len(starts) == 1, f"docs/events.md needs exactly one heading ending in {marker}"
    first = sections[starts[0]]
    lines = [f"{'#' * first.level} {first.title}", *first.lines]
    for later in sections[starts[0] + 1 :]:
        if later.level <= first.level:
            break
        lines += [f"{'#' * later.level} {later.title}", *later.lines]
    return Section(first.level, first.title, lines)


def _field_rows(section: Section) -> list[str]:
    """First-column names of the section's tables that are headed ``| Field |``."""
    names: list[str] = []
    in_fields = False
    for line in section.lines:
        if not line.startswith("|"):
            in_fields = False
        elif re.match(r"^\|\s*Field\s*\|", line):
            in_fields = True
        elif in_fields and (match := _FIELD_ROW.match(line)):
            names.append(match.group(1))
    return names


SECTIONS, EXAMPLES = _parse(DOC.read_text(encoding="utf-8"))
MODELS = _documented_models()
TOP_LEVEL: list[type[BaseModel]] = [*_event_models(), DeadLetter]
TYPE_OF = {model.model_fields["type"].default: model for model in TOP_LEVEL}


def _validate(raw: str) -> BaseModel:
    data = json.loads(raw)
    assert isinstance(data, dict), "an example is one JSON object"
    if data.get("type") == "deadletter":
        return DeadLetter.model_validate_json(raw)
    try:
        return decode(raw.encode())
    except DecodeError as exc:
        raise AssertionError(f"does not decode: {exc.reason}") from None


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_has_a_row_in_its_models_section(model: type[BaseModel]) -> None:
    rows = _field_rows(_section_of(SECTIONS, model))
    assert [name for name in _own_fields(model) if name not in rows] == []
    allowed = set(_own_fields(model))
    assert sorted(set(rows) - allowed) == [], "rows for fields the model does not have"
    assert len(rows) == len(set(rows)), "a field documented twice"


def test_the_envelope_is_documented_once_for_all_events() -> None:
    rows = _field_rows(_section_of(SECTIONS, Event))
    assert set(rows) == {*Event.model_fields, "type"}
    for model in _event_models():
        assert set(Event.model_fields) <= set(model.model_fields), f"{model.__name__} is not an Event"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_enum_and_literal_values_are_named_in_their_section(model: type[BaseModel]) -> None:
    text = _section_of(SECTIONS, model).text
    for name in _own_fields(model):
        missing = [value for value in _choices(model.model_fields[name].annotation) if f"`{value}`" not in text]
        assert missing == [], f"{model.__name__}.{name}: values not documented"


def test_every_json_example_validates_and_is_what_encode_writes() -> None:
    assert EXAMPLES, "docs/events.md has no ```json examples"
    for example in EXAMPLES:
        where = f"docs/events.md line {example.line}"
        try:
            event = _validate(example.raw)
        except (AssertionError, ValueError) as exc:
            raise AssertionError(f"{where}: {exc}") from None
        # Canonical: every field present, times and enums as encode writes them.
        assert json.loads(event.model_dump_json()) == json.loads(example.raw), f"{where}: not as encode writes it"
        model = type(event)
        assert example.section.endswith(f"({model.__name__})"), f"{where}: a {model.__name__} example elsewhere"


def test_every_type_has_an_example() -> None:
    shown = {json.loads(example.raw)["type"] for example in EXAMPLES}
    assert sorted(set(TYPE_OF) - shown) == []


def test_exposure_examples_carry_the_ids_the_text_explains() -> None:
    exposures = [e for e in map(_validate, (x.raw for x in EXAMPLES)) if isinstance(e, ExposureEvent)]
    assert {e.status for e in exposures} >= {ExposureStatus.OPENED, ExposureStatus.CLOSED}
    for exposure in exposures:
        assert exposure.event_id == exposure_event_id(exposure.exposure_id, exposure.sequence)
        if exposure.status is ExposureStatus.OPENED:
            assert exposure.sequence == 0
            cause = exposure.cause_event_ids[0]
            assert exposure.exposure_id == exposure_id_for(exposure.folder, exposure.label.name, cause)


def test_dead_letter_examples_give_the_reason_decode_gives() -> None:
    letters = [e for e in map(_validate, (x.raw for x in EXAMPLES)) if isinstance(e, DeadLetter)]
    assert letters
    for letter in letters:
        with pytest.raises(DecodeError) as refused:
            decode(base64.b64decode(letter.value_b64, validate=True))
        assert refused.value.reason == letter.reason


def test_topics_and_limits_are_named() -> None:
    titles = [section.title for section in SECTIONS]
    for topic in (TOPIC_FS, TOPIC_DIRECTORY, TOPIC_LABELS, TOPIC_EXPOSURES, TOPIC_DEADLETTER):
        assert f"Topic `{topic}`" in titles
    text = DOC.read_text(encoding="utf-8")
    assert f"{MAX_MESSAGE_BYTES:,}" in text
    assert f"{MAX_BATCH} (`MAX_BATCH`)" in text


def test_the_group_id_sinks_add_is_documented_as_it_is_made(tmp_path: Path) -> None:
    import hashlib

    from alerts.grouping import GroupUpdate
    from alerts.jsonl import JsonlConfig, JsonlSink
    from tests.unit.alert_samples import opened

    (section,) = [s for s in SECTIONS if s.title == "What the alert sinks write: `group_id`"]
    assert "| `group_id` | string |" in section.text
    assert "`burst-` + the first 16 hex digits of SHA-256(the `exposure_id` of the burst's first exposure)" in (
        section.text
    )
    event = opened()
    sink = JsonlSink(JsonlConfig(kind="jsonl", path=tmp_path / "alerts.jsonl"))
    (line,) = sink.render(GroupUpdate.single(event))
    assert set(line) - set(event.model_dump(mode="json")) == {"group_id"}  # the one key the sinks add
    assert line["group_id"] == "burst-" + hashlib.sha256(event.exposure_id.encode()).hexdigest()[:16]
