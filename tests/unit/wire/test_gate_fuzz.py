"""A fuzz pass over the command gate, and the hostile inputs it must refuse fast.

The property, over random bytes, valid signed commands of every action mutated in their
JSON or their bytes, and JSON made to hurt a parser: :meth:`CommandGate.admit` and
:meth:`CommandGate.preview` either return a command or raise a
:class:`~agent.wire.errors.ProtocolError`, never another exception, and never take long.
``@BRIEF`` runs in the default suite; the ``slow`` variants run the same properties longer.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fuzz import BRIEF, LONG
from hypothesis import given
from hypothesis import strategies as st

from agent.wire.codec import MAX_JSON_DEPTH, encode
from agent.wire.commands import (
    AnnounceCommand,
    Command,
    ConfirmCommand,
    PromoteCommand,
    RollbackCommand,
    SetWeightsArgs,
    SetWeightsCommand,
    ShadowArgs,
    ShadowCommand,
    StageArgs,
    StageCommand,
    StatusCommand,
    Target,
)
from agent.wire.errors import (
    MalformedMessageError,
    OversizedMessageError,
    ProtocolError,
    SchemaError,
)
from agent.wire.gate import CommandGate
from agent.wire.keys import generate_keypair
from agent.wire.replay import ReplayGuard
from agent.wire.signing import Signer, TrustStore

THING = "fuzz-1"
_KEYS = generate_keypair("ctl-fuzz")
_SIGNER = Signer(private_key=_KEYS.private_key(), key_id="ctl-fuzz")
_TRUST = TrustStore.from_text({"ctl-fuzz": _KEYS.public_pem})
_SLOW_S = 0.5  # one message, on a loaded CI machine


def _signed(cls: type[Command], seq: int, **fields: Any) -> bytes:
    return encode(_SIGNER.sign(cls(rollout_id="r-fuzz", rollout_seq=seq, issued_at=1,
                                   target=Target(kind="thing", name=THING), **fields)))


VALID = [
    _signed(StageCommand, 1, args=StageArgs(url="https://example.com/m.tar.gz", sha256="a" * 64,
                                            version="m-2", size_bytes=10, package_version=2)),
    _signed(ShadowCommand, 2, args=ShadowArgs(sample_rate=0.25)),
    _signed(SetWeightsCommand, 3, args=SetWeightsArgs(blue=90, green=10)),
    *(_signed(cls, seq) for seq, cls in enumerate(
        (PromoteCommand, ConfirmCommand, RollbackCommand, StatusCommand, AnnounceCommand), 4)),
]


def _gate() -> CommandGate:
    return CommandGate(trust=_TRUST, guard=ReplayGuard(thing=THING, groups=["fleet"]))


def _check(raw: bytes) -> None:
    """The property: a command or a ProtocolError, from both entry points, quickly."""
    gate = _gate()
    for entry in (gate.preview, gate.admit):
        started = time.perf_counter()
        try:
            command = entry(raw)
        except ProtocolError as err:
            assert str(err), "every refusal says why"
        else:
            assert isinstance(command, Command)
        elapsed = time.perf_counter() - started
        assert elapsed < _SLOW_S, f"{elapsed:.2f} s for {len(raw)} bytes"


json_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
                | st.integers(min_value=2**63 - 2, max_value=2**64))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                           max_leaves=12)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            paths += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            paths += _paths(value, (*prefix, i))
    return paths


@st.composite
def mutated_json(draw: st.DrawFn) -> bytes:
    """A valid signed command with a field replaced, removed or added somewhere in it."""
    doc = json.loads(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        op = draw(st.sampled_from(("replace", "delete", "add")))
        if not path:
            doc = draw(json_values) if op == "replace" else doc
            continue
        *head, last = path
        parent = doc
        for key in head:
            parent = parent[key]
        if op == "replace":
            parent[last] = draw(json_values)
        elif op == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode(
        "utf-8", errors="surrogatepass")


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    """A valid signed command with bytes flipped, cut out or put in."""
    raw = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(("flip", "cut", "insert", "truncate")))
        if op == "flip" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del raw[at:at + draw(st.integers(1, 16))]
        elif op == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=16) | st.sampled_from(
                [b"[", b"{", b'"', b"\\", b"\\u", b"1e999", b"-0", b"NaN", b"\xed\xa0\x80"]))
        else:
            del raw[at:]
    return bytes(raw)


@st.composite
def hostile_json(draw: st.DrawFn) -> bytes:
    """JSON made to hurt a parser: deep nesting, long strings, huge numbers, many items."""
    kind = draw(st.sampled_from(("deep", "long", "number", "many")))
    n = draw(st.integers(1, 130_000))
    raw = draw(st.sampled_from(VALID))
    doc = json.loads(raw)
    if kind == "deep":
        opener = draw(st.sampled_from(("[", '{"a":')))
        return (opener * min(n, 40_000)).encode()[:130_000]
    if kind == "number":
        number = draw(st.sampled_from((b"9" * min(n, 6000), b"1e%d" % n, b"-0.%de9" % n)))
        return raw.replace(b'"rollout_seq":', b'"rollout_seq":' + number + b",\"x\":", 1)
    if kind == "long":
        doc[draw(st.sampled_from(sorted(doc)))] = "x" * n
    else:
        doc["args"] = [0] * (n // 2)
    return json.dumps(doc).encode()


payloads = st.binary(max_size=4096) | mutated_json() | mutated_bytes() | hostile_json()


@BRIEF
@given(payloads)
def test_the_gate_returns_a_command_or_a_protocol_error(raw: bytes) -> None:
    _check(raw)


@pytest.mark.slow
@LONG
@given(payloads)
def test_the_gate_returns_a_command_or_a_protocol_error_long(raw: bytes) -> None:
    _check(raw)


def test_every_valid_command_is_admitted() -> None:
    gate = _gate()
    assert [gate.admit(raw).action for raw in VALID] == [
        "stage", "shadow", "set_weights", "promote", "confirm", "rollback", "status",
        "announce"]


def _refused(raw: bytes) -> ProtocolError:
    started = time.perf_counter()
    with pytest.raises(ProtocolError) as caught:
        _gate().admit(raw)
    assert time.perf_counter() - started < _SLOW_S
    return caught.value


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 20_000, b"[" * 33 + b"]" * 33,
                                 b'{"v":1,"x":' + b"[[]," * 30_000 + b"[]" + b"]" * 30_000])
def test_deep_nesting_is_refused_before_parsing(raw: bytes) -> None:
    err = _refused(raw[:128 * 1024])
    assert isinstance(err, MalformedMessageError)
    assert f"deeper than {MAX_JSON_DEPTH} levels" in str(err)


def test_nesting_within_the_limit_reaches_the_schema() -> None:
    doc = json.loads(VALID[0])
    doc["args"] = json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))
    err = _refused(json.dumps(doc).encode())
    assert isinstance(err, SchemaError) and str(err).startswith("args")


def test_brackets_inside_strings_are_not_nesting() -> None:
    url = "https://example.com/" + "[{" * 500
    raw = _signed(StageCommand, 1, args=StageArgs(url=url, sha256="a" * 64, version="m-2"))
    command = _gate().admit(raw)
    assert isinstance(command, StageCommand) and command.args.url == url


@pytest.mark.parametrize(("field", "value", "match"), [
    ("command_id", "c" * 100_000, "command_id"),
    ("signature", "s" * 100_000, "signature"),
    ("rollout_seq", 2**63, "rollout_seq"),
    ("rollout_seq", 1e308, "rollout_seq"),
])
def test_long_strings_and_huge_numbers_are_refused_by_the_schema(
        field: str, value: Any, match: str) -> None:
    err = _refused(json.dumps({**json.loads(VALID[3]), field: value}).encode())
    assert isinstance(err, SchemaError) and match in str(err)


@pytest.mark.parametrize(("number", "match"), [
    (b"9" * 5000, "not usable JSON"),  # past Python's 4300-digit limit
    (b"1e999", "rollout_seq"),  # parses as inf: the schema refuses it
    (b"-Infinity", "-Infinity is not a JSON number"),
    (b"4.0", "rollout_seq"),
])
def test_numbers_no_parser_can_agree_on_are_refused(number: bytes, match: str) -> None:
    raw = VALID[3].replace(b'"rollout_seq":4', b'"rollout_seq":' + number)
    assert raw != VALID[3]
    err = _refused(raw)
    assert isinstance(err, (MalformedMessageError, SchemaError)) and match in str(err)


def test_a_payload_over_the_wire_limit_is_refused_unread() -> None:
    err = _refused(b"[" * (129 * 1024))
    assert isinstance(err, OversizedMessageError) and "the limit is 131072" in str(err)
