"""Fuzzing the decoders: 10,000 generated hostile records through the processor's own dead-lettering, and
10,000 hypothesis cases over every input type, each refused in one clean line or decoded to a well-formed event."""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from permwatch.config import ProcessorConfig
from permwatch.deadletter import MAX_KEY_CHARS, dead_letter, reason_class
from permwatch.events import DeadLetter, DecodeError, decode
from permwatch.transport.base import Record
from permwatch.transport.topics import DEADLETTER_MAX_BYTES, RECORD_MAX_BYTES
from processor.runner import ProcessorRunner
from tests.fuzz_messages import (
    INPUT_TOPICS,
    KEY_CHARS,
    TOPIC_OF,
    VALID,
    assert_clean_reason,
    assert_letter_for,
    fuzzed_messages,
)


class LetterBox:
    """A bus that keeps what is published to it."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str | None, bytes]] = []

    def publish(self, topic: str, key: str | None, value: bytes) -> None:
        self.published.append((topic, key, value))

    def broadcast(self, topic: str, key: str | None, value: bytes) -> None:
        self.published.append((topic, key, value))

    def flush(self) -> None:
        pass

    def on(self, topic: str) -> list[tuple[str | None, bytes]]:
        return [(key, value) for on, key, value in self.published if on == topic]


class Committed:
    commits = 0

    def commit(self) -> None:
        self.commits += 1


def test_the_valid_messages_the_fuzz_starts_from_decode() -> None:
    for type_, doc in VALID.items():
        assert decode(json.dumps(doc).encode()).type == type_


def test_ten_thousand_hostile_records_are_dead_lettered_with_reasons_that_name_the_fault() -> None:
    messages = fuzzed_messages(10_000)
    assert {m.topic for m in messages} == set(INPUT_TOPICS)
    bus = LetterBox()
    runner = ProcessorRunner(bus, ProcessorConfig())
    records = [
        Record(m.topic, 0, offset, None if m.key is None else m.key.decode("utf-8", "replace"), m.value, 1)
        for offset, m in enumerate(messages)
    ]
    consumer = Committed()
    for at in range(0, len(records), 500):
        runner.handle(records[at : at + 500], consumer)

    assert runner.handled == 0 and not bus.on("exposures") and consumer.commits == 20
    letters = bus.on("deadletter")
    assert len(letters) == len(messages) == runner.dead_letters
    classes: Counter[str] = Counter()
    for (key, raw), message, record in zip(letters, messages, records, strict=True):
        letter = DeadLetter.model_validate_json(raw)
        assert (letter.stage, letter.topic, letter.offset) == ("processor", message.topic, record.offset)
        assert len(raw) + len((key or "").encode()) < DEADLETTER_MAX_BYTES
        assert_letter_for(json.loads(raw), message)
        classes[reason_class(letter.reason)] += 1
    kinds = Counter(m.kind for m in messages)
    assert min(kinds.values()) >= 50 and len(kinds) == 12, kinds  # every way of being wrong, each often
    # ("other": an unknown type, which has no class of its own)
    assert set(classes) == {"tombstone", "too_large", "schema_version", "invalid", "wrong_topic", "other"}, classes


def reason_for(doc: dict[str, Any]) -> str:
    try:
        decode(json.dumps(doc).encode())
    except DecodeError as exc:
        return exc.reason
    raise AssertionError(f"decoded: {doc}")


def test_an_unknown_field_is_named_only_when_its_name_is_plain() -> None:
    fs = VALID["fs.permission"]
    assert reason_for({**fs, "comment": 1}) == "invalid fs.permission.comment: Extra inputs are not permitted"
    for name in ("<script>alert(1)</script>", "\x1b[2J", "../../etc/passwd", "${jndi:x}", "a" * 65, ""):
        assert reason_for({**fs, name: 1}) == "invalid fs.permission.<unknown field>: Extra inputs are not permitted"
    label = {**VALID["label.assigned"], "label": {"name": "x", "<img src=x>": 1}}
    assert reason_for(label) == "invalid label.assigned.label.<unknown field>: Extra inputs are not permitted"


def test_any_schema_version_but_1_reads_unsupported() -> None:
    for version in (2, "1", 2**64, [1], None):
        assert reason_for({**VALID["directory.user"], "schema_version": version}) == (
            "unsupported schema_version (this build reads version 1)"
        )
    entry = {"tag": "other", "perms": 5, "schema_version": 1}  # a field of that name where none is declared
    assert reason_for({**VALID["fs.permission"], "acl": [entry]}) == (
        "invalid fs.permission.acl.0.schema_version: Extra inputs are not permitted"
    )


def test_a_dead_letter_of_the_largest_record_with_the_most_hostile_key_fits_the_dead_letter_topic() -> None:
    assert MAX_KEY_CHARS == KEY_CHARS
    bus = LetterBox()
    small = Record("fs", 1, 7, "/srv/share/x", b"{", 1)
    assert dead_letter(bus, small, "invalid <message>: x", stage="processor").key == "/srv/share/x"
    for key in ("\ufffd" * 350_000, "\x01" * 1_000_000, "/srv/share/x"):  # a key as long as the topic allows
        value = b"q" * (RECORD_MAX_BYTES - len(key.encode()))
        record = Record("fs", 1, 7, key, value, 1)
        letter = dead_letter(bus, record, "message too large: 1065000 bytes > 1000000", stage="processor")
        letter_key, raw = bus.published[-1][1:]
        assert len(raw) + len((letter_key or "").encode()) < DEADLETTER_MAX_BYTES  # what the producer takes
        assert base64.b64decode(letter.value_b64) == value  # whole
        assert reason_class(letter.reason) == "too_large"
        if len(key) > MAX_KEY_CHARS:
            assert letter_key == letter.key == key[:MAX_KEY_CHARS]
            assert letter.reason == (
                f"message too large: 1065000 bytes > 1000000 [key cut to its first {MAX_KEY_CHARS} of {len(key)} "
                "characters]"
            )
        else:
            assert letter.key == key and letter.reason == "message too large: 1065000 bytes > 1000000"


# ------------------------------------------------------------------ hypothesis

text = st.text(max_size=12) | st.text(alphabet="`|~{}<>$\x1b\u202e\x00.ab", max_size=12)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=8,
)
INPUT_TYPES = sorted(t for t, on in TOPIC_OF.items() if on in INPUT_TOPICS)
fields = st.sampled_from([(type_, name) for type_ in INPUT_TYPES for name in sorted(VALID[type_])])
# derandomized so CI is repeatable; the generated-record test above varies its inputs by seed
fuzz = settings(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
VALID_FS_TEXT = json.dumps(VALID["fs.permission"]).encode()


def decodes_or_is_refused_cleanly(raw: bytes, type_: str | None) -> None:
    try:
        event = decode(raw)
    except DecodeError as exc:
        assert_clean_reason(exc.reason)
    else:
        assert type_ is None or event.type == type_  # what decodes is a well-formed event of its own type
        assert decode(event.model_dump_json().encode()) == event


@settings(fuzz, max_examples=4_000)
@given(field=fields, value=json_values)
def test_any_field_of_any_input_type_replaced_by_any_json_value(field: tuple[str, str], value: object) -> None:
    type_, name = field
    doc = dict(VALID[type_])
    doc[name] = value
    decodes_or_is_refused_cleanly(
        json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass"), None if name == "type" else type_
    )


@settings(fuzz, max_examples=4_000)
@given(
    type_=st.sampled_from(INPUT_TYPES),
    extra=st.dictionaries(text, scalars, max_size=3),
    drop=st.sets(st.sampled_from(["event_id", "observed_at", "path", "name", "label", "events", "root", "kind"])),
)
def test_any_input_type_with_fields_dropped_and_added(type_: str, extra: dict[str, Any], drop: set[str]) -> None:
    doc = {name: value for name, value in VALID[type_].items() if name not in drop} | extra
    decodes_or_is_refused_cleanly(json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass"), None)


@settings(fuzz, max_examples=2_000)
@given(raw=st.binary(max_size=64) | st.binary(max_size=16).map(lambda junk: VALID_FS_TEXT + junk))
def test_any_bytes(raw: bytes) -> None:
    decodes_or_is_refused_cleanly(raw, None)
