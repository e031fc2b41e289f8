"""Message schemas and the codec: round trips, and one typed error per kind of bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.device.platform.profile import emulated_profile
from agent.tools.boards import board_names, board_root
from agent.wire.codec import decode, encode
from agent.wire.commands import (
    COMMAND_CLASSES,
    Command,
    NoArgs,
    PromoteCommand,
    SetWeightsCommand,
    StageCommand,
    Target,
)
from agent.wire.errors import (
    DecodeError,
    MalformedMessageError,
    OversizedMessageError,
    SchemaError,
    UnsupportedVersionError,
)
from agent.wire.examples import example_commands, example_up_messages
from agent.wire.fields import MAX_PAYLOAD_BYTES
from agent.wire.messages import (
    UP_MESSAGES,
    Event,
    Heartbeat,
    Metrics,
    ProfileInfo,
    UpMessage,
)
from agent.wire.topics import UP_CHANNELS

ALL_EXAMPLES: list[UpMessage | Command] = [*example_up_messages(), *example_commands()]


def _doc(message: UpMessage | Command) -> dict[str, Any]:
    return dict(json.loads(encode(message)))


def _raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _example_id(message: UpMessage | Command) -> str:
    return message.action if isinstance(message, Command) else message.type


@pytest.mark.parametrize("message", ALL_EXAMPLES, ids=_example_id)
def test_every_message_round_trips(message: UpMessage | Command) -> None:
    raw = encode(message)
    decoded = decode(raw)
    assert decoded == message
    assert type(decoded) is type(message)
    assert decode(raw, expect=type(message)) == message
    assert encode(decoded) == raw  # canonical: one message, one byte string


def test_every_type_and_action_has_an_example() -> None:
    assert {m.type for m in example_up_messages()} == set(UP_MESSAGES)
    assert {c.action for c in example_commands()} == set(COMMAND_CLASSES)
    assert {cls.channel for cls in UP_MESSAGES.values()} == set(UP_CHANNELS)


def test_encoding_is_compact_sorted_utf8() -> None:
    event = Event(thing="pi-01", seq=7, sent_at=0, kind="agent_error", detail="température")
    raw = encode(event)
    assert b" " not in raw.replace(b"agent_error", b"")
    assert "température".encode() in raw
    keys = list(json.loads(raw))
    assert keys == sorted(keys)


def test_decode_to_a_base_class_and_refuse_another() -> None:
    raw = encode(example_commands()[0])
    assert isinstance(decode(raw, expect=Command), StageCommand)
    with pytest.raises(SchemaError, match="type: expected UpMessage, got StageCommand"):
        decode(raw, expect=UpMessage)
    with pytest.raises(SchemaError, match="expected PromoteCommand"):
        decode(raw, expect=PromoteCommand)


@pytest.mark.parametrize(("raw", "match"), [
    (b"\xff\xfe{}", "not UTF-8"),
    (b"not json", "not JSON"),
    (b"", "not JSON"),
    (b"[1, 2]", "JSON list, not an object"),
    (b'"text"', "JSON str"),
    (b'{"v": 1, "v": 1}', "duplicate key 'v'"),
    (b'{"v": 1, "x": NaN}', "NaN is not a JSON number"),
    (b'{"v": 1, "x": "\\ud800"}', "lone surrogate"),
    (b"[" * 100_000, "deeper than 32 levels"),
])
def test_malformed_payloads(raw: bytes, match: str) -> None:
    with pytest.raises(MalformedMessageError, match=match) as info:
        decode(raw)
    assert info.value.code == "malformed"
    assert len(str(info.value)) < 200


def test_oversized_on_decode_before_parsing() -> None:
    doc = _doc(example_up_messages()[1])
    doc["pad"] = "x" * MAX_PAYLOAD_BYTES
    with pytest.raises(OversizedMessageError, match="limit is 131072"):
        decode(_raw(doc))
    # exactly at the limit is not "oversized" (it fails later, on the unknown field)
    at_limit = _raw({**_doc(example_up_messages()[1]), "pad": ""})
    at_limit = at_limit[:-2] + b"x" * (MAX_PAYLOAD_BYTES - len(at_limit)) + at_limit[-2:]
    assert len(at_limit) == MAX_PAYLOAD_BYTES
    with pytest.raises(SchemaError, match="pad"):
        decode(at_limit)


def test_oversized_on_encode() -> None:
    data: dict[str, Any] = {f"k{i}": "🙂" * 1024 for i in range(32)}  # 4 bytes a char
    event = Event(thing="pi-01", seq=1, sent_at=0, kind="agent_error", detail="x", data=data)
    with pytest.raises(OversizedMessageError, match="event message is"):
        encode(event)


@pytest.mark.parametrize(("version", "error", "match"), [
    (2, UnsupportedVersionError, "schema version 2 is not supported"),
    (0, UnsupportedVersionError, "schema version 0"),
    ("1", SchemaError, "v: must be an integer"),
    (True, SchemaError, "v: must be an integer"),
    (None, SchemaError, "v: must be an integer"),
])
def test_versions(version: object, error: type[DecodeError], match: str) -> None:
    doc = _doc(example_up_messages()[1])
    doc["v"] = version
    with pytest.raises(error, match=match):
        decode(_raw(doc))


def test_missing_version() -> None:
    doc = _doc(example_up_messages()[1])
    del doc["v"]
    with pytest.raises(SchemaError, match=r"^v: field required$"):
        decode(_raw(doc))


def _edit_heartbeat(**changes: Any) -> bytes:
    doc = _doc(example_up_messages()[1])
    for key, value in changes.items():
        if value is None:
            del doc[key]
        else:
            doc[key] = value
    return _raw(doc)


def _edit_weights(args: dict[str, Any]) -> bytes:
    doc = _doc(example_commands()[2])
    doc["args"] = args
    return _raw(doc)


@pytest.mark.parametrize(("raw", "match"), [
    (_edit_heartbeat(seq=None), r"^seq: Field required$"),
    (_edit_heartbeat(seq="5"), r"^seq: Input should be a valid integer"),
    (_edit_heartbeat(seq=-1), r"^seq: Input should be greater than or equal to 0"),
    (_edit_heartbeat(uptime_s="1"), r"^uptime_s: "),
    (_edit_heartbeat(extra=1), r"^extra: Extra inputs are not permitted"),
    (_edit_heartbeat(thing="bad/thing"), r"^thing: String should match pattern"),
    (_edit_heartbeat(id="not-a-uuid"), r"^id: String should match pattern"),
    (_edit_heartbeat(models={"red": "m"}), r"^models\.red\.\[key\]: Input should be 'blue'"),
    (_edit_heartbeat(type="gossip"), r"^type: must be one of register, heartbeat"),
    (_edit_heartbeat(type=None), r"^type: must be one of"),
    (_edit_weights({"blue": 90, "green": 20}), r"^args: blue \+ green must be 100, not 110$"),
    (_edit_weights({"blue": 190, "green": -90}), r"^args\.blue: Input should be less than or "
                                                 r"equal to 100 \(\+1 more\)$"),
    (_edit_weights({"blue": 90}), r"^args\.green: Field required$"),
    (_edit_weights({"blue": True, "green": 0}), r"^args\.blue: Input should be a valid integer"),
])
def test_schema_errors_name_the_field(raw: bytes, match: str) -> None:
    with pytest.raises(SchemaError, match=match) as info:
        decode(raw)
    assert info.value.code == "schema"
    assert len(str(info.value)) <= 210


def test_schema_error_keeps_the_related_id() -> None:
    doc = _doc(example_commands()[2])
    doc["args"] = {"blue": 1, "green": 1}
    with pytest.raises(SchemaError) as info:
        decode(_raw(doc))
    assert info.value.related_id == doc["command_id"]


def test_unknown_action_and_mismatched_args() -> None:
    doc = _doc(example_commands()[0])
    with pytest.raises(SchemaError, match=r"^action: must be one of stage, shadow"):
        decode(_raw({**doc, "action": "format_disk"}))
    with pytest.raises(SchemaError, match=r"^args\.\w+: Extra inputs"):
        decode(_raw({**doc, "action": "promote"}))
    with pytest.raises(SchemaError, match=r"^args\.sample_rate: Field required"):
        decode(_raw({**doc, "action": "shadow"}))


def test_command_args_are_checked() -> None:
    doc = _doc(example_commands()[0])
    for field, value, match in [
        ("sha256", "abc", r"args\.sha256"),
        ("url", "ftp://x/y", r"args\.url"),
        ("version", "", r"args\.version"),
    ]:
        bad = {**doc, "args": {**doc["args"], field: value}}
        with pytest.raises(SchemaError, match=match):
            decode(_raw(bad))
    shadow = _doc(example_commands()[1])
    with pytest.raises(SchemaError, match=r"args\.sample_rate: Input should be less"):
        decode(_raw({**shadow, "args": {"sample_rate": 1.5}}))


def test_a_command_must_be_built_as_its_action_class() -> None:
    with pytest.raises(ValueError, match="must be built as its own class"):
        Command(target=Target(kind="thing", name="pi-01"), rollout_id="r1", rollout_seq=1,
                action="promote", args=NoArgs(), issued_at=0)
    assert SetWeightsCommand.model_fields["action"].default == "set_weights"


def test_metrics_buckets_must_fit_their_version() -> None:
    doc = _doc(example_up_messages()[2])
    doc["variants"]["blue"]["buckets"]["counts"].append(0)
    with pytest.raises(SchemaError, match=r"buckets: log10x10-v1 needs 80 counts, got 81"):
        decode(_raw(doc), expect=Metrics)
    doc = _doc(example_up_messages()[2])
    doc["variants"]["blue"]["buckets"]["version"] = "linear-v9"
    with pytest.raises(SchemaError, match="unknown histogram bucket version"):
        decode(_raw(doc))
    doc = _doc(example_up_messages()[2])
    doc["variants"]["blue"]["inferences_total"] += 1
    with pytest.raises(SchemaError, match="inferences_total must equal"):
        decode(_raw(doc))


@pytest.mark.parametrize("board", board_names())
def test_every_board_profile_fits_the_register_schema(board: str) -> None:
    profile = emulated_profile(fixture_root=board_root(board))
    info = ProfileInfo.model_validate(profile.to_dict())
    assert info.neo_target == profile.neo_target
    assert info.reported_arch == profile.reported_arch


def test_messages_are_immutable() -> None:
    heartbeat = example_up_messages()[1]
    assert isinstance(heartbeat, Heartbeat)
    with pytest.raises(ValueError, match="frozen"):
        heartbeat.seq = 5
