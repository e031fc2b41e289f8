"""One public-key format everywhere a public key is read.

Each accepted form (PEM text, base64, the PEM body without its armour lines, a PEM file, a
base64 file, a relative path) through each entry point (:func:`public_key_from`,
:class:`TrustStore`, the agent configuration's ``trustedKeys``, ``serve --config``, ``serve
--trusted-key``, the Lambda handler's ``EDGE_TRUSTED_KEYS``), and each malformed value
giving, word for word, the same error through every one of them.
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.cli.main import build_parser, main
from agent.cli.serve import config_from_args
from agent.core.errors import ConfigError
from agent.device.app.config import load_config
from agent.device.lambda_function import handler as lambda_handler
from agent.device.lambda_function.loading import LambdaSettings
from agent.wire.errors import KeyFormatError
from agent.wire.keys import (
    KeyPair,
    generate_keypair,
    public_key_b64,
    public_key_from,
    trusted_public_key,
)
from agent.wire.signing import Signer, TrustStore

KEY_ID = "ctl-1"
PAIR = generate_keypair(KEY_ID)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Relative key paths resolve here; the Lambda handler forgets settings between cases."""
    monkeypatch.chdir(tmp_path)
    for name in ("EDGE_MODEL_STORE", "EDGE_INITIAL_PACKAGE", "EDGE_MODEL_DIR",
                 "EDGE_TRUSTED_KEYS"):
        monkeypatch.delenv(name, raising=False)
    lambda_handler._reset_for_tests()
    yield
    lambda_handler._reset_for_tests()


def _file(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _pem_body(pair: KeyPair) -> str:
    return "".join(pair.public_pem.decode().splitlines()[1:-1])


# Each form of PAIR's public key, as a value one would type or configure.
FORMS: dict[str, Callable[[Path], str]] = {
    "pem text": lambda _tmp: PAIR.public_pem.decode(),
    "base64": lambda _tmp: PAIR.public_b64,
    "base64 with whitespace": lambda _tmp: f"  {PAIR.public_b64}\n",
    "pem body": lambda _tmp: _pem_body(PAIR),
    "pem file": lambda tmp: str(_file(tmp, "ctl-1.pub", PAIR.public_pem)),
    "base64 file": lambda tmp: str(_file(tmp, "ctl-1.b64", PAIR.public_b64 + "\n")),
    "relative pem file": lambda tmp: _file(tmp, "rel.pub", PAIR.public_pem).name,
}


def _serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", "--thing", "dev-1", *argv])


def _via_serve_flag(value: str, tmp: Path) -> TrustStore:
    config = load_config(config_from_args(_serve_args("--trusted-key", f"{KEY_ID}={value}")))
    return TrustStore.from_text(config.trusted_keys)  # as AgentService.start builds it


def _via_config_file(value: str, tmp: Path) -> TrustStore:
    settings = _file(tmp, "agent.json", json.dumps({"trustedKeys": {KEY_ID: value}}))
    config = load_config(config_from_args(_serve_args("--config", str(settings))))
    return TrustStore.from_text(config.trusted_keys)


def _via_agent_config(value: str, tmp: Path) -> TrustStore:
    config = load_config({"thingName": "dev-1", "trustedKeys": {KEY_ID: value}})
    return TrustStore.from_text(config.trusted_keys)


def _via_lambda(value: str, tmp: Path) -> TrustStore:
    settings = LambdaSettings.from_environ({"EDGE_MODEL_STORE": str(tmp / "state"),
                                            "EDGE_TRUSTED_KEYS": json.dumps({KEY_ID: value})})
    assert settings.trust is not None
    return settings.trust


ENTRY_POINTS: dict[str, Callable[[str, Path], TrustStore]] = {
    "TrustStore.from_text": lambda value, _tmp: TrustStore.from_text({KEY_ID: value}),
    "TrustStore.from_config": lambda value, _tmp: TrustStore.from_config(
        {"keys": {KEY_ID: value}}),
    "trustedKeys": _via_agent_config,
    "serve --config": _via_config_file,
    "serve --trusted-key": _via_serve_flag,
    "EDGE_TRUSTED_KEYS": _via_lambda,
}


@pytest.mark.parametrize("form", FORMS)
def test_public_key_from_reads_every_form(form: str, tmp_path: Path) -> None:
    assert public_key_b64(public_key_from(FORMS[form](tmp_path))) == PAIR.public_b64


def test_a_path_object_is_always_a_file(tmp_path: Path) -> None:
    assert public_key_from(_file(tmp_path, "k.pub", PAIR.public_pem)) == PAIR.public_key()
    assert public_key_from(PAIR.public_pem) == PAIR.public_key()  # bytes: the text itself
    with pytest.raises(KeyFormatError, match="cannot read key file"):
        public_key_from(tmp_path / PAIR.public_b64.replace("/", "_"))


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("form", FORMS)
def test_every_form_through_every_entry_point(form: str, entry: str, tmp_path: Path) -> None:
    trust = ENTRY_POINTS[entry](FORMS[form](tmp_path), tmp_path)
    assert trust.key_ids == {KEY_ID}
    signed = Signer(private_key=PAIR.private_key(), key_id=KEY_ID).seal({"doc": form})
    assert trust.verify_document(signed) == KEY_ID


def test_trusted_keys_are_held_as_base64_once_read(tmp_path: Path) -> None:
    path = _file(tmp_path, "ctl-1.pub", PAIR.public_pem)
    config = load_config({"thingName": "dev-1", "trustedKeys": {KEY_ID: str(path)}})
    path.unlink()  # read once, at load: what the agent trusts cannot change under it
    assert config.trusted_keys == {KEY_ID: PAIR.public_b64}
    assert config.merged({"rateHz": 5}).trusted_keys == {KEY_ID: PAIR.public_b64}
    raw = config_from_args(_serve_args("--trusted-key", f"{KEY_ID}={PAIR.public_pem.decode()}"))
    assert raw["trustedKeys"] == {KEY_ID: PAIR.public_b64}


def _ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# Malformed values, and what the error says of each (after "trusted key 'ctl-1'").
MALFORMED: dict[str, tuple[Callable[[Path], str], str]] = {
    "words": (lambda _tmp: "not a key",
              ": neither PEM, base64 nor a readable key file (got 'not a key')"),
    "missing file": (lambda _tmp: "keys/ctl-1.pem",
                     ": neither PEM, base64 nor a readable key file (got 'keys/ctl-1.pem')"),
    "short base64": (lambda _tmp: base64.b64encode(bytes(31)).decode(),
                     ": neither PEM, base64 nor a readable key file (got base64 of 31 bytes "
                     "where an Ed25519 public key has 32)"),
    "broken pem": (lambda _tmp: "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----",
                   ": not a readable PEM public key"),
    "ec pem": (lambda _tmp: _ec_pem(), ": PEM public key is "),
    "private pem": (lambda _tmp: PAIR.private_pem.decode(), " holds a private key"),
    "garbage file": (lambda tmp: str(_file(tmp, "bad.pub", "garbage\n")),
                     ": key file '{tmp}/bad.pub' holds neither PEM nor base64"),
    "private key file": (lambda tmp: str(_file(tmp, "ctl-1.key", PAIR.private_pem)),
                         ": key file '{tmp}/ctl-1.key' holds a private key"),
}


def _message(entry: Callable[[str, Path], object], value: str, tmp: Path) -> str:
    with pytest.raises(KeyFormatError) as info:
        entry(value, tmp)
    return str(info.value)


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_key_reads_the_same_through_every_entry_point(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    make, words = MALFORMED[case]
    value = make(tmp_path)
    expected = _message(lambda v, _t: trusted_public_key(KEY_ID, v), value, tmp_path)
    assert expected.startswith(f"trusted key {KEY_ID!r}" + words.format(tmp=tmp_path))
    assert "PRIVATE" not in expected and PAIR.private_b64 not in expected  # never echoed
    for name, entry in ENTRY_POINTS.items():
        assert _message(entry, value, tmp_path) == expected, name

    # As a person sees it: `edge-agent serve` exits 2 with that line...
    settings = _file(tmp_path, "agent.json", json.dumps({"trustedKeys": {KEY_ID: value}}))
    for argv in (["--trusted-key", f"{KEY_ID}={value}"], ["--config", str(settings)]):
        assert main(["serve", "--thing", "dev-1", "--state-dir", str(tmp_path / "s"),
                     *argv]) == 2
        assert capsys.readouterr().err == f"edge-agent: KeyFormatError: {expected}\n"
    # ... and the Lambda handler answers it as its error.
    monkeypatch.setenv("EDGE_MODEL_STORE", str(tmp_path / "state"))
    monkeypatch.setenv("EDGE_TRUSTED_KEYS", json.dumps({KEY_ID: value}))
    result = lambda_handler.handler({"input": [0.0] * 64}, None)
    assert result == {"error": {"type": "KeyFormatError", "message": expected}}


def test_a_long_base64_like_value_is_not_echoed() -> None:
    mangled = PAIR.private_b64 * 2  # e.g. two keys pasted together
    with pytest.raises(KeyFormatError) as info:
        trusted_public_key(KEY_ID, mangled)
    assert PAIR.private_b64[:8] not in str(info.value)
    assert "88 characters that are not valid base64" in str(info.value)


def test_a_bad_key_id_and_a_bad_flag_are_named() -> None:
    with pytest.raises(KeyFormatError, match="key id 'bad id'"):
        trusted_public_key("bad id", PAIR.public_b64)
    with pytest.raises(KeyFormatError, match="key id 'bad id'"):
        load_config({"thingName": "dev-1", "trustedKeys": {"bad id": PAIR.public_b64}})
    with pytest.raises(ConfigError, match="--trusted-key wants ID=VALUE"):
        config_from_args(_serve_args("--trusted-key", PAIR.public_b64.rstrip("=")))
