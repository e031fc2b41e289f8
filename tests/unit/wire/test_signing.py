"""Ed25519 command signatures: who may command a device, and tampering caught."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.core.errors import ConfigError
from agent.wire.canonical import canonical_json
from agent.wire.codec import decode, encode
from agent.wire.commands import Command, SetWeightsCommand
from agent.wire.errors import (
    BadSignatureError,
    KeyFormatError,
    MissingSignatureError,
    ReplayError,
    RevokedKeyError,
    SignatureError,
    UnknownKeyError,
)
from agent.wire.examples import example_commands
from agent.wire.gate import CommandGate, rejection
from agent.wire.keys import KeyPair, generate_keypair, load_private_key, load_public_key
from agent.wire.messages import Event
from agent.wire.replay import ReplayGuard
from agent.wire.signing import Signer, TrustStore, signed_bytes


@pytest.fixture(scope="module")
def current() -> KeyPair:
    return generate_keypair("controller-2024")


@pytest.fixture(scope="module")
def other() -> KeyPair:
    return generate_keypair("controller-2023")


@pytest.fixture
def signer(current: KeyPair) -> Signer:
    return Signer(private_key=current.private_key(), key_id=current.key_id)


@pytest.fixture
def trust(current: KeyPair, other: KeyPair) -> TrustStore:
    return TrustStore.from_text({current.key_id: current.public_b64,
                                 other.key_id: other.public_pem})


def _weights(signer: Signer) -> SetWeightsCommand:
    command = example_commands()[2]
    assert isinstance(command, SetWeightsCommand)
    return signer.sign(command)


def test_signed_command_verifies_after_the_wire(signer: Signer, trust: TrustStore) -> None:
    for command in example_commands():
        signed = signer.sign(command)
        assert signed.key_id == "controller-2024"
        received = decode(encode(signed), expect=Command)
        assert trust.verify(received) == "controller-2024"


def test_the_signature_covers_the_canonical_json_without_signature(
        signer: Signer, current: KeyPair) -> None:
    signed = _weights(signer)
    doc = signed.model_dump(mode="json")
    expected = json.dumps({k: v for k, v in doc.items() if k != "signature"}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False).encode()
    assert signed_bytes(doc) == expected == canonical_json(signed.unsigned())
    current.public_key().verify(base64.b64decode(doc["signature"]), expected)  # raises if not


def test_missing_signature(trust: TrustStore) -> None:
    command = example_commands()[0]
    with pytest.raises(MissingSignatureError, match="not signed") as info:
        trust.verify(command)
    assert info.value.related_id == command.command_id
    keyed = command.model_copy(update={"key_id": "controller-2024"})
    with pytest.raises(MissingSignatureError):
        trust.verify(keyed)


def test_forged_signature(signer: Signer, trust: TrustStore) -> None:
    forged = _weights(signer).model_copy(
        update={"signature": base64.b64encode(bytes(64)).decode()})
    with pytest.raises(BadSignatureError, match="does not match"):
        trust.verify(forged)


@pytest.mark.parametrize(("signature", "match"), [
    ("!!not base64!!", "not base64"),
    (base64.b64encode(b"short").decode(), "is 5 bytes, not 64"),
])
def test_malformed_signature(signer: Signer, trust: TrustStore, signature: str,
                             match: str) -> None:
    bad = _weights(signer).model_copy(update={"signature": signature})
    with pytest.raises(BadSignatureError, match=match):
        trust.verify(bad)


def test_signed_by_an_untrusted_key(trust: TrustStore) -> None:
    stranger = generate_keypair("mallory")
    command = Signer(private_key=stranger.private_key(), key_id="mallory").sign(
        example_commands()[3])
    with pytest.raises(UnknownKeyError, match="untrusted key 'mallory'"):
        trust.verify(command)
    # claiming a trusted key id does not help: the signature is checked with that key
    claimed = Signer(private_key=stranger.private_key(), key_id="controller-2024").sign(
        example_commands()[3])
    with pytest.raises(BadSignatureError):
        trust.verify(claimed)


def test_signed_by_a_revoked_key(current: KeyPair, other: KeyPair) -> None:
    trust = TrustStore.from_text({current.key_id: current.public_b64,
                                  other.key_id: other.public_b64}, revoked=[other.key_id])
    old = Signer(private_key=other.private_key(), key_id=other.key_id)
    with pytest.raises(RevokedKeyError, match="revoked key 'controller-2023'"):
        trust.verify(old.sign(example_commands()[0]))
    new = Signer(private_key=current.private_key(), key_id=current.key_id)
    trust.verify(new.sign(example_commands()[0]))


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "weights": lambda doc: doc.update(args={"blue": 10, "green": 90}),  # valid, not signed
    "rollout_seq": lambda doc: doc.update(rollout_seq=99),
    "target": lambda doc: doc["target"].update(name="everyone"),
    "rollout_id": lambda doc: doc.update(rollout_id="r-other"),
    "issued_at": lambda doc: doc.update(issued_at=0),
    "command_id": lambda doc: doc.update(command_id="c" * 32),
}


@pytest.mark.parametrize("edit", EDITS)
def test_a_field_edited_after_signing(signer: Signer, trust: TrustStore, edit: str) -> None:
    doc = json.loads(encode(_weights(signer)))
    EDITS[edit](doc)
    tampered = decode(json.dumps(doc).encode(), expect=Command)
    with pytest.raises(BadSignatureError) as info:
        trust.verify(tampered)
    assert isinstance(info.value, SignatureError)


def test_key_id_swapped_to_another_trusted_key(signer: Signer, trust: TrustStore) -> None:
    doc = json.loads(encode(_weights(signer)))
    doc["key_id"] = "controller-2023"
    with pytest.raises(BadSignatureError):
        trust.verify(decode(json.dumps(doc).encode(), expect=Command))


def test_generic_documents_such_as_manifests(signer: Signer, trust: TrustStore) -> None:
    manifest = {"model": "digits-v2", "files": {"compiled.so": "ab" * 32}, "size": 12}
    sealed = signer.seal(manifest)
    assert sealed["key_id"] == "controller-2024"
    assert trust.verify_document(sealed) == "controller-2024"
    assert trust.verify_document(json.loads(json.dumps(sealed))) == "controller-2024"
    detached = signer.sign_document({**manifest, "key_id": signer.key_id})
    assert detached == sealed["signature"]
    with pytest.raises(BadSignatureError):
        trust.verify_document({**sealed, "size": 13})
    with pytest.raises(MissingSignatureError):
        trust.verify_document(manifest)


def test_keys_load_from_pem_files_and_base64(tmp_path: Path, current: KeyPair) -> None:
    (tmp_path / "controller.pem").write_bytes(current.private_pem)
    (tmp_path / "controller.pub").write_bytes(current.public_pem)
    from_file = Signer.from_file(tmp_path / "controller.pem", key_id=current.key_id)
    from_b64 = Signer.from_text(current.private_b64, key_id=current.key_id)
    command = example_commands()[4]
    assert from_file.sign(command).signature == from_b64.sign(command).signature  # deterministic
    trust = TrustStore.from_files({current.key_id: tmp_path / "controller.pub"})
    trust.verify(from_file.sign(command))
    assert load_public_key(current.public_b64) == load_public_key(current.public_pem)
    assert load_private_key(current.private_pem.decode()).public_key() == current.public_key()


@pytest.mark.parametrize("text", [
    "not a key",
    base64.b64encode(bytes(31)).decode(),
    "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n",
])
def test_bad_key_text(text: str) -> None:
    with pytest.raises(KeyFormatError):
        load_public_key(text)


def test_a_key_of_another_algorithm_is_refused() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(KeyFormatError, match="not Ed25519"):
        load_public_key(pem)
    with pytest.raises(KeyFormatError, match="key id"):
        generate_keypair("bad key id")
    with pytest.raises(KeyFormatError):
        TrustStore.from_files({"k": Path("/nonexistent/key.pub")})


def test_trust_store_from_greengrass_config(current: KeyPair, other: KeyPair) -> None:
    trust = TrustStore.from_config({"keys": {current.key_id: current.public_b64,
                                             other.key_id: other.public_b64},
                                    "revoked": [other.key_id]})
    assert trust.key_ids == {"controller-2024", "controller-2023"}
    assert trust.revoked == {"controller-2023"}
    with pytest.raises(ConfigError, match="unknown setting"):
        TrustStore.from_config({"keys": {}, "trusted": []})
    with pytest.raises(ConfigError, match="'revoked' must be a list"):
        TrustStore.from_config({"keys": {}, "revoked": "controller-2023"})


def test_the_gate_decodes_verifies_and_admits(signer: Signer, trust: TrustStore) -> None:
    gate = CommandGate(trust=trust, guard=ReplayGuard(thing="pi-kitchen-01", groups=["canary"]))
    raw = encode(_weights(signer))
    command = gate.admit(raw)
    assert isinstance(command, SetWeightsCommand)
    assert command.args.blue == 90
    with pytest.raises(ReplayError) as info:
        gate.admit(raw)
    fields = rejection(info.value, topic="edge/pi-kitchen-01/commands")
    event = Event(thing="pi-kitchen-01", seq=1, sent_at=0, **fields)
    assert event.data == {"code": "replay", "topic": "edge/pi-kitchen-01/commands"}
    assert event.related_id == command.command_id


def test_a_forged_command_does_not_poison_the_guard(signer: Signer, trust: TrustStore) -> None:
    guard = ReplayGuard(thing="pi-kitchen-01", groups=["canary"])
    gate = CommandGate(trust=trust, guard=guard)
    genuine = _weights(signer)
    forged = genuine.model_copy(update={"rollout_seq": 10**9, "id": "f" * 32})
    with pytest.raises(BadSignatureError):
        gate.admit(encode(forged))
    assert guard.highest(genuine.rollout_id) is None
    gate.admit(encode(genuine))
    assert guard.highest(genuine.rollout_id) == genuine.rollout_seq
