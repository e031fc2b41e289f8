"""Fuzzing the manifest reader: ``parse_manifest_json`` then ``verify_manifest`` either give
a valid manifest or raise a PackageError (format or signature), never anything else and
never slowly, on random JSON-ish bytes and on mutations of a real signed manifest (raw
byte edits, and hostile values put in its fields and signed again by the trusted key).
The hostile inputs the passes found, and the ones the reader was hardened against, are
explicit regression tests at the end."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fuzz import BRIEF, LONG
from hypothesis import given
from hypothesis import strategies as st
from package_support import Keys, build, make_keys, members

from agent.device.packages.errors import PackageError, PackageFormatError
from agent.device.packages.manifest import (
    MANIFEST_NAME,
    PackageManifest,
    manifest_bytes,
    parse_manifest_json,
    verify_manifest,
)
from agent.device.packages.manifest_json import INT64_MAX, INT64_MIN
from agent.wire.canonical import canonical_json
from agent.wire.signing import signed_bytes

PER_EXAMPLE_S = 5.0  # generous: one example takes milliseconds


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def real(built_models: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real signed manifest, as build_package writes it."""
    package = build(built_models, "digits-v2", keys, tmp_path_factory.mktemp("pkg"), version=5)
    return dict(members(package))[MANIFEST_NAME]


def read(raw: bytes, keys: Keys) -> PackageManifest | None:
    """The manifest, or None for a typed refusal; any other exception fails the test."""
    started = time.monotonic()
    try:
        manifest = verify_manifest(parse_manifest_json(raw), keys.trust)
    except PackageError:
        manifest = None
    assert time.monotonic() - started < PER_EXAMPLE_S, f"{len(raw)} bytes took too long"
    if manifest is not None:  # a valid object: canonical, 64-bit, and what was signed
        dumped = manifest.model_dump(mode="json")
        canonical_json(dumped)
        assert all(INT64_MIN <= n <= INT64_MAX for n in _ints(dumped))
        assert manifest_bytes(manifest).startswith(b"{")
    return manifest


def _ints(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _ints(item)]
    if isinstance(value, list):
        return [n for item in value for n in _ints(item)]
    return []


# ---- strategies -------------------------------------------------------------------------

HOSTILE_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400,
                   str(2**64), str(2**63), str(-(2**63) - 1), "9" * 5000, "-0", "1e-400",
                   "0." + "0" * 1000 + "1"]
HOSTILE_TOKENS = [*HOSTILE_NUMBERS, '"\\ud800"', '"\\udfff"', '"a\\u0000b"', "[" * 200,
                  "]" * 50, "{", "}", '"version":1,', '"files":{},', ",", ":", "null",
                  "true", '""', '"\\', "\xef\xbb\xbf"]
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                         st.text(max_size=20), st.sampled_from(HOSTILE_NUMBERS))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=30)


def _raw_value(value: Any) -> str:
    """JSON text of a generated value; the hostile number strings go in unquoted."""
    if isinstance(value, str) and value in HOSTILE_NUMBERS:
        return value
    if isinstance(value, list):
        return "[" + ",".join(_raw_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_raw_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@st.composite
def byte_mutations(draw: st.DrawFn, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "token"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        else:
            data[at:at] = draw(st.sampled_from(HOSTILE_TOKENS)).encode("utf-8", "surrogatepass")
    return bytes(data)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (for putting a hostile value there)."""
    out = [path]
    if isinstance(value, dict):
        out += [p for key, item in value.items() for p in _paths(item, (*path, key))]
    elif isinstance(value, list):
        out += [p for i, item in enumerate(value) for p in _paths(item, (*path, i))]
    return out


def _put(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


# ---- the properties ---------------------------------------------------------------------

def _random_bytes_property(keys: Keys, blob: bytes) -> None:
    read(blob, keys)


FAKE_SIGNATURE = base64.b64encode(bytes(64)).decode()


def _random_json_property(keys: Keys, value: Any) -> None:
    if isinstance(value, dict):  # looks signed by a trusted key: verification is reached
        value = {**value, "key_id": "ctl-1", "signature": FAKE_SIGNATURE}
    read(_raw_value(value).encode("utf-8", "surrogatepass"), keys)


def _byte_mutation_property(keys: Keys, mutated: bytes) -> None:
    read(mutated, keys)


def _field_mutation_property(keys: Keys, real: bytes, data: st.DataObject) -> None:
    doc = json.loads(real)
    path = data.draw(st.sampled_from(_paths(doc)))
    value = data.draw(json_values)
    doc = _put(doc, path, value)
    if isinstance(doc, dict):
        # signed again by the trusted key, so that validation is reached; NaN or infinity
        # have no canonical form: the old signature stays
        with contextlib.suppress(ValueError):
            doc = keys.signer.seal(doc)
    raw = _raw_value(doc).encode("utf-8", "surrogatepass")
    manifest = read(raw, keys)
    if manifest is not None:  # accepted: the signature covers what was parsed
        assert signed_bytes(parse_manifest_json(raw)) == signed_bytes(doc)


@BRIEF
@given(blob=st.binary(max_size=512))
def test_random_bytes_are_refused_with_a_typed_error(keys: Keys, blob: bytes) -> None:
    _random_bytes_property(keys, blob)


@BRIEF
@given(value=json_values)
def test_random_json_is_refused_with_a_typed_error(keys: Keys, value: Any) -> None:
    _random_json_property(keys, value)


@BRIEF
@given(data=st.data())
def test_byte_mutations_of_a_real_manifest(keys: Keys, real: bytes, data: st.DataObject) -> None:
    _byte_mutation_property(keys, data.draw(byte_mutations(real)))


@BRIEF
@given(data=st.data())
def test_hostile_fields_in_a_resigned_manifest(keys: Keys, real: bytes,
                                              data: st.DataObject) -> None:
    _field_mutation_property(keys, real, data)


@pytest.mark.slow
@LONG
@given(blob=st.binary(max_size=4096))
def test_random_bytes_long(keys: Keys, blob: bytes) -> None:
    _random_bytes_property(keys, blob)


@pytest.mark.slow
@LONG
@given(value=json_values)
def test_random_json_long(keys: Keys, value: Any) -> None:
    _random_json_property(keys, value)


@pytest.mark.slow
@LONG
@given(data=st.data())
def test_byte_mutations_long(keys: Keys, real: bytes, data: st.DataObject) -> None:
    _byte_mutation_property(keys, data.draw(byte_mutations(real)))


@pytest.mark.slow
@LONG
@given(data=st.data())
def test_hostile_fields_long(keys: Keys, real: bytes, data: st.DataObject) -> None:
    _field_mutation_property(keys, real, data)


# ---- regressions: each was an untyped exception, a wrong error or a double meaning -------

def test_the_real_manifest_is_accepted(keys: Keys, real: bytes) -> None:
    manifest = read(real, keys)
    assert manifest is not None and manifest.version == 5


def test_an_out_of_range_float_under_any_signature_is_a_format_error(keys: Keys,
                                                                     real: bytes) -> None:
    """``1e400`` parses as infinity, which has no canonical form: signature verification
    used to raise a bare ValueError."""
    raw = real.replace(b'"tolerance":', b'"tolerance":1e400,"x":', 1)
    with pytest.raises(PackageFormatError, match=r"golden\.tolerance: the number '1e400' is "
                                                 r"out of range"):
        verify_manifest(parse_manifest_json(raw), keys.trust)


def test_a_lone_surrogate_cannot_share_a_signature_with_a_question_mark(keys: Keys,
                                                                        real: bytes) -> None:
    """The canonical form writes a lone surrogate as ``?``: ``digits-v5\\ud800`` would
    verify under the signature of ``digits-v5?``."""
    doc = json.loads(real)
    doc["label"] = "digits-v5?"
    sealed = keys.signer.seal(doc)
    raw = json.dumps(sealed).replace("digits-v5?", "digits-v5\\ud800").encode()
    with pytest.raises(PackageFormatError, match=r"label: text .* not valid Unicode"):
        parse_manifest_json(raw)


@pytest.mark.parametrize(("text", "where", "reason"), [
    ("9" * 5000, "version", "5000 digits"),
    (str(2**64), "version", "20 digits"),
    (str(2**63), "version", "9223372036854775808 is outside the signed 64-bit range"),
    ("NaN", "version", "NaN is not a JSON number"),
    ("-Infinity", "version", "-Infinity is not a JSON number"),
])
def test_hostile_numbers_name_their_field_and_cost_nothing(real: bytes, text: str, where: str,
                                                           reason: str) -> None:
    raw = real.replace(b'"version":5', b'"version":' + text.encode(), 1)
    started = time.monotonic()
    with pytest.raises(PackageFormatError, match=rf"manifest\.json: {where}: .*{reason}"):
        parse_manifest_json(raw)
    assert time.monotonic() - started < 0.5


def test_deep_nesting_is_refused_without_recursion(real: bytes) -> None:
    for depth, pattern in ((40, "nested deeper than 32 levels"),
                           (100_000, "not usable JSON")):
        raw = real.replace(b'"variant":null', b'"variant":' + b"[" * depth + b"]" * depth, 1)
        with pytest.raises(PackageFormatError, match=pattern):
            parse_manifest_json(raw)
