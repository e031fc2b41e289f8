"""Hostile manifests through the real staging, with really signed packages: duplicate keys,
signatures over non-canonical JSON, NaN/Infinity and huge numbers, tensor specs the
artifact does not have, files listed but absent and present but unlisted. Each is refused
with its typed error naming the field or file, quickly, and leaves nothing in the work
folder. Then a validly signed package of another model, or for another Neo target,
replayed as an update to a running agent over a real broker: refused, blue still serving.

The signature policy: the signature covers the canonical JSON of the parsed manifest. A
manifest written differently (indented, keys in another order, escaped text) whose
canonical form is the signed one is accepted; a signature over the file's own
non-canonical bytes is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_process import AgentProcess
from cloud import CloudPublisher, CloudSubscriber, signed_command
from package_support import HOST_ARTIFACT, file_member, leftovers, members, pack, repack

from agent.core.errors import AgentError
from agent.device.packages.errors import (
    BadPackageSignatureError,
    MissingFileError,
    PackageFormatError,
    TensorSpecMismatchError,
    UnlistedFileError,
)
from agent.device.packages.manifest import MANIFEST_NAME, PackageManifest
from agent.device.packages.staging import StagedPackage, stage
from agent.device.platform.profile import DeviceProfile, detect_profile
from agent.tools.brokers.mosquitto import MosquittoBroker
from agent.tools.packaging.build import build_package
from agent.tools.packaging.keys import KeyFiles, keys_generate
from agent.wire.canonical import canonical_json
from agent.wire.commands import StageCommand, StatusCommand
from agent.wire.keys import read_private_key
from agent.wire.signing import Signer, TrustStore

DEADLINE_S = 60.0  # one refusal takes well under a second; CI is a loaded 2-core box
ART = f"dlr/{HOST_ARTIFACT}"
Case = tuple[Callable[["World", Path], Path], type[AgentError], str]


@dataclass(frozen=True)
class World:
    key: KeyFiles
    signer: Signer
    trust: TrustStore
    good: Path  # digits-v2 packaged as version 5, label digits-v5
    host: DeviceProfile
    models: Path


@pytest.fixture(scope="module")
def world(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("hostile-manifests")
    key = keys_generate(root, "ctl-1")
    signer = Signer.from_file(key.private, key_id="ctl-1")
    good = build_package(built_models / "digits-v2", HOST_ARTIFACT, signer=signer,
                         out_dir=root / "good", version=5)
    return World(key=key, signer=signer, trust=TrustStore.from_files({"ctl-1": key.public}),
                 good=good, host=detect_profile(), models=built_models)


def _stage(world: World, package: Path, work: Path) -> StagedPackage:
    return stage(package, trust=world.trust, min_version=0, profile=world.host, work_dir=work)


def _refused(world: World, package: Path, work: Path, error: type[AgentError],
             pattern: str) -> None:
    started = time.monotonic()
    with pytest.raises(error, match=pattern):
        _stage(world, package, work)
    assert time.monotonic() - started < DEADLINE_S
    assert leftovers(work) == []


def _raw(package: Path) -> bytes:
    return dict(members(package))[MANIFEST_NAME]


def _doc(package: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_raw(package))
    return doc


def _with_manifest(src: Path, dest: Path, raw: bytes,
                   replace: dict[str, bytes] | None = None) -> Path:
    """``src`` with its manifest replaced by exactly ``raw`` (and members replaced)."""
    replace = replace or {}
    entries = [file_member(MANIFEST_NAME, raw)]
    entries += [file_member(name, replace.get(name, data))
                for name, data in members(src) if name != MANIFEST_NAME]
    return pack(dest, entries)


def _text_edit(world: World, dest: Path, old: bytes, new: bytes) -> Path:
    """The good package with one edit of its manifest's text (its signature kept)."""
    raw = _raw(world.good)
    assert raw.count(old) >= 1, old
    return _with_manifest(world.good, dest, raw.replace(old, new, 1))


def _regex_edit(world: World, dest: Path, pattern: bytes, new: bytes) -> Path:
    raw, count = re.subn(pattern, new, _raw(world.good), count=1)
    assert count == 1, pattern
    return _with_manifest(world.good, dest, raw)


def _resigned(world: World, dest: Path, edit: Callable[[dict[str, Any]], None],
              replace: dict[str, bytes] | None = None) -> Path:
    """The good package with its manifest edited and signed again by the trusted key (a
    package its signer really made), written in canonical form."""
    doc = _doc(world.good)
    for name, data in (replace or {}).items():
        doc["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    edit(doc)
    return _with_manifest(world.good, dest, canonical_json(world.signer.seal(doc)), replace)


# ---- duplicate keys -----------------------------------------------------------------------

DUPLICATES = {  # where -> (text in the manifest, the same text with a duplicate before it)
    "manifest": (b'{"arch"', b'{"version":99,"arch"', "version"),
    "files": (b'"model.json":{', b'"model.json":{"sha256":"' + b"0" * 64 + b'","size":1},'
              b'"model.json":{', "model.json"),
    "golden": (b'"tolerance":', b'"tolerance":1,"tolerance":', "tolerance"),
    "inputs.0": (b'"shape":[1,64]', b'"shape":[1,8,8],"shape":[1,64]', "shape"),
}


@pytest.mark.parametrize("where", sorted(DUPLICATES))
def test_a_duplicate_key_anywhere_is_refused(world: World, tmp_path: Path, where: str) -> None:
    old, new, key = DUPLICATES[where]
    package = _text_edit(world, tmp_path / "dup.tgz", old, new)
    _refused(world, package, tmp_path / "work", PackageFormatError,
             rf"manifest\.json: {re.escape(where)}: duplicate key '{key}'")


# ---- what the signature covers --------------------------------------------------------------

def test_a_signature_over_non_canonical_bytes_is_refused(world: World, tmp_path: Path) -> None:
    doc = {k: v for k, v in _doc(world.good).items() if k != "signature"}
    text = json.dumps(doc, indent=2).encode()  # what a naive signer signs: its own file
    signature = read_private_key(world.key.private).sign(text)
    raw = json.dumps({**doc, "signature": base64.b64encode(signature).decode()},
                     indent=2).encode()
    package = _with_manifest(world.good, tmp_path / "raw-signed.tgz", raw)
    _refused(world, package, tmp_path / "work", BadPackageSignatureError,
             "signature does not match the content")


def test_a_rewritten_manifest_whose_canonical_form_is_signed_is_accepted(
        world: World, tmp_path: Path) -> None:
    model_json = _model_json(world, variant="é")
    doc = _doc(world.good)
    doc["variant"], doc["label"] = "é", "digits-v5-é"  # non-ASCII text, escaped below
    doc["files"]["model.json"] = _entry(model_json)
    sealed = world.signer.seal(doc)
    rewritten = json.dumps(dict(reversed(list(sealed.items()))), indent=2, ensure_ascii=True)
    assert "\\u00e9" in rewritten and rewritten.encode() != canonical_json(sealed)
    package = _with_manifest(world.good, tmp_path / "rewritten.tgz", rewritten.encode(),
                             replace={"model.json": model_json})
    staged = _stage(world, package, tmp_path / "work")
    assert staged.manifest == PackageManifest.model_validate(sealed)
    assert staged.manifest.label == "digits-v5-é"
    assert (staged.dir / MANIFEST_NAME).read_text() == rewritten  # kept as it came


def _model_json(world: World, **changes: Any) -> bytes:
    info = json.loads(dict(members(world.good))["model.json"])
    info.update(changes)
    return json.dumps(info).encode()


def _entry(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


# ---- NaN, Infinity, huge numbers ------------------------------------------------------------

def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    return edit


GOLDEN_IN = rb'("inputs":\[\{"input":\[)[^,\]]+'
GOLDEN_OUT = rb'("outputs":\[\{"probabilities":\[)[^,\]]+'
NUMBERS: dict[str, Callable[[World, Path], Path]] = {
    "version 10**400": lambda w, d: _resigned(w, d, _set(("version",), 10**400)),
    "version 2**64": lambda w, d: _resigned(w, d, _set(("version",), 2**64)),
    "version 2**63": lambda w, d: _resigned(w, d, _set(("version",), 2**63)),
    "version of 5000 digits": lambda w, d: _text_edit(w, d, b'"version":5',
                                                      b'"version":' + b"9" * 5000),
    "size 2**64": lambda w, d: _resigned(w, d, _set(("files", "model.json", "size"), 2**64)),
    "golden value 2**64": lambda w, d: _resigned(
        w, d, _set(("golden", "inputs", 0, "input", 0), 2**64)),
    "golden value NaN": lambda w, d: _regex_edit(w, d, GOLDEN_OUT, rb"\1NaN"),
    "golden value -Infinity": lambda w, d: _regex_edit(w, d, GOLDEN_IN, rb"\1-Infinity"),
    "golden value 1e400": lambda w, d: _regex_edit(w, d, GOLDEN_IN, rb"\g<1>1e400"),
    "tolerance Infinity": lambda w, d: _regex_edit(w, d, rb'("tolerance":)[^,}]+',
                                                   rb"\1Infinity"),
    "tensor shape 10**400": lambda w, d: _resigned(w, d, _set(("inputs", 0, "shape"),
                                                              [1, 10**400])),
}
NUMBER_ERRORS = {
    "version 10**400": r"version: an integer of 401 digits is outside the signed 64-bit",
    "version 2**64": r"version: an integer of 20 digits is outside the signed 64-bit",
    "version 2**63": r"version: the integer 9223372036854775808 is outside the signed 64-bit",
    "version of 5000 digits": r"version: an integer of 5000 digits",
    "size 2**64": r"files\.model\.json\.size: an integer of 20 digits",
    "golden value 2**64": r"golden\.inputs\.0\.input\.0: an integer of 20 digits",
    "golden value NaN": r"golden\.outputs\.0\.probabilities\.0: NaN is not a JSON number",
    "golden value -Infinity": r"golden\.inputs\.0\.input\.0: -Infinity is not a JSON number",
    "golden value 1e400": r"golden\.inputs\.0\.input\.0: the number '1e400' is out of range",
    "tolerance Infinity": r"golden\.tolerance: Infinity is not a JSON number",
    "tensor shape 10**400": r"inputs\.0\.shape\.1: an integer of 401 digits",
}


@pytest.mark.parametrize("case", sorted(NUMBERS))
def test_nan_infinity_and_huge_numbers_are_refused_naming_the_field(
        world: World, tmp_path: Path, case: str) -> None:
    package = NUMBERS[case](world, tmp_path / "number.tgz")
    started = time.monotonic()
    _refused(world, package, tmp_path / "work", PackageFormatError,
             rf"^manifest\.json: {NUMBER_ERRORS[case]}")
    assert time.monotonic() - started < 5, "refused before anything is unpacked or run"


# ---- tensor specs the artifact does not have ------------------------------------------------

def _specs(which: str, golden_values: int | None = None,
           **spec: Any) -> Callable[[World, Path], Path]:
    """A package whose signed manifest and model.json agree on a tensor spec the artifact
    does not have (``golden_values``: golden cases cut to fit a smaller tensor)."""
    def make(world: World, dest: Path) -> Path:
        info = json.loads(dict(members(world.good))["model.json"])
        info[which][0].update(spec)
        model_json = json.dumps(info).encode()

        def edit(doc: dict[str, Any]) -> None:
            old_name = doc[which][0]["name"]
            doc[which][0].update(spec)
            for case in doc["golden"][which]:
                values = case.pop(old_name)
                case[spec.get("name", old_name)] = values[:golden_values]
        return _resigned(world, dest, edit, replace={"model.json": model_json})
    return make


SPECS: dict[str, Case] = {
    "input shape, same size": (_specs("inputs", shape=[1, 8, 8]), TensorSpecMismatchError,
                               r"the model takes inputs input float32\[1, 64\], the manifest "
                               r"says input float32\[1, 8, 8\]"),
    "input shape, smaller": (_specs("inputs", 32, shape=[1, 32]), TensorSpecMismatchError,
                             r"the manifest says input float32\[1, 32\]"),
    "input dtype": (_specs("inputs", dtype="int32"), TensorSpecMismatchError,
                    r"the model takes inputs input float32\[1, 64\], the manifest says "
                    r"input int32\[1, 64\]"),
    "input name": (_specs("inputs", name="pixels"), TensorSpecMismatchError,
                   r"the manifest says pixels float32\[1, 64\]"),
    "output shape": (_specs("outputs", 5, shape=[1, 5]), TensorSpecMismatchError,
                     r"the model gives outputs probabilities float32\[1, 10\], the manifest "
                     r"says probabilities float32\[1, 5\]"),
    "output dtype": (_specs("outputs", dtype="float16"), TensorSpecMismatchError,
                     r"the manifest says probabilities float16\[1, 10\]"),
    "negative dimensions": (_specs("inputs", shape=[-1, -64]), PackageFormatError,
                            r"inputs: .*shape \[-1, -64\] has a dimension outside "
                            r"1\.\.2147483647"),
    "33 dimensions": (_specs("inputs", shape=[1] * 32 + [64]), PackageFormatError,
                      r"inputs: .*33 dimensions, more than 32"),
}


@pytest.mark.parametrize("case", sorted(SPECS))
def test_tensor_specs_the_artifact_does_not_have_are_refused(
        world: World, tmp_path: Path, case: str) -> None:
    make, error, pattern = SPECS[case]
    _refused(world, make(world, tmp_path / "specs.tgz"), tmp_path / "work", error, pattern)


# ---- files listed but absent, present but unlisted ------------------------------------------

FILES: dict[str, Case] = {
    "listed and signed, not in the archive": (
        lambda w, d: _resigned(w, d, _set(("files", f"{ART}/extra.bin"),
                                          _entry(b"never packed"))),
        MissingFileError,
        rf"{re.escape(ART)}/extra\.bin: listed in the manifest, absent from the archive"),
    "dropped from the archive": (
        lambda w, d: repack(w.good, d, drop=(f"{ART}/compiled.params",)),
        MissingFileError,
        rf"{re.escape(ART)}/compiled\.params: listed in the manifest, absent"),
    "in the archive, not listed": (
        lambda w, d: repack(w.good, d, extra=[file_member("notes.txt", b"hello")]),
        UnlistedFileError, r"files not listed in the manifest: notes\.txt"),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_a_manifest_and_an_archive_that_disagree_on_files_are_refused(
        world: World, tmp_path: Path, case: str) -> None:
    make, error, pattern = FILES[case]
    _refused(world, make(world, tmp_path / "files.tgz"), tmp_path / "work", error, pattern)


# ---- replayed as an update to a running agent -----------------------------------------------

@dataclass
class Device:
    thing: str
    state_dir: Path
    cloud: CloudSubscriber
    ctl: CloudPublisher
    signer: Signer
    agent: AgentProcess
    seq: int = 0

    def send(self, cls: Any, **args: Any) -> str:
        self.seq += 1
        payload = signed_command(self.signer, cls, thing=self.thing, rollout_id="hostile-r1",
                                 rollout_seq=self.seq, **args)
        self.ctl.publish(f"edge/{self.thing}/commands", payload)
        return str(json.loads(payload)["command_id"])

    def ack(self, command_id: str) -> Any:
        self.cloud.wait_for(lambda ms: any(m.type == "ack" and m.command_id == command_id
                                           for m in ms), DEADLINE_S, f"ack of {command_id}")
        return next(m for m in self.cloud.of_type("ack") if m.command_id == command_id)

    def stage(self, package: Path, label: str) -> Any:
        """Stage ``package`` from the agent's package folder (the only place it reads)."""
        inbox = self.state_dir / "packages" / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        package = Path(shutil.copy(package, inbox))
        return self.ack(self.send(StageCommand, url=package.as_uri(), version=label,
                                  sha256=hashlib.sha256(package.read_bytes()).hexdigest()))

    def models(self) -> Any:
        command_id = self.send(StatusCommand)
        self.ack(command_id)
        self.cloud.wait_for(lambda ms: any(m.type == "state" and m.in_reply_to == command_id
                                           for m in ms), DEADLINE_S, "state reply")
        return next(m for m in self.cloud.of_type("state")
                    if m.in_reply_to == command_id).models

    def still_serving(self) -> None:
        """Blue answers on: the inference count keeps rising, the process is alive."""
        def served() -> int:
            return max((m.variants["blue"].inferences_total
                        for m in self.cloud.of_type("metrics")
                        if "blue" in m.variants), default=0)
        before = served()
        self.cloud.wait_for(lambda _ms: served() > before, 30, "blue still serving")
        assert self.agent.process is not None and self.agent.process.poll() is None
        assert self.models() == {"blue": "digits-v1"}
        assert leftovers(self.state_dir / "staging") == []


@pytest.fixture(scope="module")
def device(world: World, shared_broker: MosquittoBroker,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    root = tmp_path_factory.mktemp("hostile-agent")
    thing = "hostile-manifests-1"
    (root / "agent.yaml").write_text("trialSeconds: 2\ngoldenTimeoutSeconds: 10\n")
    cloud = CloudSubscriber(host="127.0.0.1", port=shared_broker.port,
                            topic=f"edge/{thing}/#").start()
    agent = AgentProcess(thing=thing, model=world.models / "digits-v1",
                         state_dir=root / "state", broker_port=shared_broker.port,
                         log_path=root / "agent.log", rate=200, extra=[
                             "--trusted-key", f"ctl-1={world.key.public}",
                             "--config", str(root / "agent.yaml")]).start()
    cloud.wait_for(lambda ms: any(m.type == "metrics" for m in ms), 60, "agent up")
    device = Device(thing=thing, state_dir=root / "state", cloud=cloud,
                    ctl=CloudPublisher("127.0.0.1", shared_broker.port), signer=world.signer,
                    agent=agent)
    yield device
    device.ctl.close()
    assert agent.stop() == 0, agent.log()
    cloud.stop()


def _other_model(world: World, dest: Path) -> Path:
    """A package its signer really made of another model, ``fashion`` (label fashion-v5)."""
    def edit(doc: dict[str, Any]) -> None:
        doc["name"], doc["label"] = "fashion", "fashion-v5"
    return _resigned(world, dest, edit, replace={"model.json": _model_json(world,
                                                                           name="fashion")})


def test_another_models_package_replayed_as_an_update_is_refused(
        world: World, device: Device, tmp_path: Path) -> None:
    package = _other_model(world, tmp_path / "fashion.tgz")
    started = time.monotonic()
    ack = device.stage(package, "digits-v5")
    assert time.monotonic() - started < DEADLINE_S
    assert ack.outcome == "rejected", ack.reason
    assert ack.reason == "package label fashion-v5, the command expects digits-v5"
    assert ack.data["code"] == "label_mismatch" and ack.data["model"] == "fashion-v5"
    device.still_serving()


def test_a_package_for_another_target_replayed_as_an_update_is_refused(
        world: World, device: Device, tmp_path: Path) -> None:
    other = next(name for name in ("rasp4b-x86_64", "rasp4b-aarch64")
                 if (world.models / "digits-v2" / "dlr" / name).is_dir())
    package = build_package(world.models / "digits-v2", other, signer=world.signer,
                            out_dir=tmp_path, version=6)
    started = time.monotonic()
    ack = device.stage(package, "digits-v6")
    assert time.monotonic() - started < DEADLINE_S
    assert ack.outcome == "failed", ack.reason
    assert ack.reason.startswith("TargetMismatchError") and "rasp4b" in ack.reason, ack.reason
    device.still_serving()
