"""The device's first model from a signed package (a model component's artifacts): the
package that fits the device is chosen and staged like any swap; anything else leaves
the store empty and says why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.core.errors import ArtifactMissingError, ConfigError, TargetMismatchError
from agent.device.app.config import load_config
from agent.device.app.first_model import choose_package, install_first_model
from agent.device.app.service import AgentService
from agent.device.packages.errors import UnknownPackageKeyError
from agent.device.platform.profile import DeviceProfile, detect_profile
from agent.device.store.store import ModelStore
from agent.tools.boards import board_root
from agent.tools.packaging.build import build_onnx_package, build_package
from agent.tools.packaging.keys import keys_generate
from agent.wire.signing import Signer, TrustStore


def _profile(board: str) -> DeviceProfile:
    return detect_profile(root=board_root(board), emulate=True)


@pytest.fixture(scope="module")
def component(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[
        Path, TrustStore]:
    """A model component's artifacts folder: digits v1 for three targets, its ONNX package
    and the testset."""
    tmp = tmp_path_factory.mktemp("component")
    keys = keys_generate(tmp / "keys", "ctl")
    signer = Signer.from_file(keys.private, key_id="ctl")
    folder = tmp / "artifacts"
    for artifact in ("rasp4b-x86_64", "jetson_nano-x86_64", "linux_x86_64-x86_64",
                     "rasp4b-aarch64"):
        build_package(built_models / "digits-v1", artifact, signer=signer, out_dir=folder,
                      version=1)
    build_onnx_package(built_models / "digits-v1", signer=signer, out_dir=folder)
    shutil.copy(built_models / "digits-v1" / "testset.npz", folder)
    return folder, TrustStore.from_text({"ctl": keys.public.read_text()})


@pytest.mark.parametrize(("board", "suffix"), [("rpi4_64", "rasp4b-x86_64"),
                                               ("jetson_nano_r32", "jetson_nano-x86_64"),
                                               ("x86_laptop", "linux_x86_64-x86_64")])
def test_the_package_for_the_device_is_chosen(component: tuple[Path, TrustStore], board: str,
                                              suffix: str) -> None:
    folder, _ = component
    assert choose_package(folder, _profile(board)).name.endswith(f"-{suffix}.tar.gz")


def test_installed_through_staging_and_current(component: tuple[Path, TrustStore],
                                               tmp_path: Path) -> None:
    folder, trust = component
    with ModelStore(tmp_path / "models") as store:
        version_id = install_first_model(folder, store=store, trust=trust,
                                         profile=_profile("rpi4_64"),
                                         work_dir=tmp_path / "staging", min_version=0,
                                         golden_timeout_s=10)
        assert store.current() == version_id and store.trial() is None
        assert store.manifest(version_id)["target"] == "rasp4b"


def test_a_version_stored_already_is_made_current_and_nothing_stays_staged(
        component: tuple[Path, TrustStore], tmp_path: Path) -> None:
    from agent.device.packages.staging import stage
    from agent.device.store.records import version_id_of

    folder, trust = component
    profile = _profile("rpi4_64")
    with ModelStore(tmp_path / "models") as store:
        # The device's package is in the store already, but not current.
        staged = stage(choose_package(folder, profile), trust=trust, min_version=0,
                       profile=profile, work_dir=tmp_path / "elsewhere")
        stored = version_id_of(staged.manifest.version, staged.archive_sha256)
        store.add(staged.dir, version_id=stored,
                  manifest=staged.manifest.model_dump(mode="json"))
        version_id = install_first_model(folder, store=store, trust=trust, profile=profile,
                                         work_dir=tmp_path / "staging", min_version=0,
                                         golden_timeout_s=10)
        assert version_id == stored and store.versions() == [stored]
        assert store.current() == stored
    assert list((tmp_path / "staging").iterdir()) == []


def test_untrusted_package_leaves_the_store_empty(component: tuple[Path, TrustStore],
                                                  tmp_path: Path) -> None:
    folder, _ = component
    other = keys_generate(tmp_path / "other", "someone")
    with ModelStore(tmp_path / "models") as store, pytest.raises(UnknownPackageKeyError):
        install_first_model(folder, store=store,
                            trust=TrustStore.from_text({"someone": other.public.read_text()}),
                            profile=_profile("rpi4_64"), work_dir=tmp_path / "staging",
                            min_version=0, golden_timeout_s=10)
    with ModelStore(tmp_path / "models") as store:
        assert store.current() is None and store.versions() == []
    assert list((tmp_path / "staging").iterdir()) == []


def test_no_package_fits_or_none_there(component: tuple[Path, TrustStore],
                                       tmp_path: Path) -> None:
    folder, _ = component
    only_arm = tmp_path / "arm"
    only_arm.mkdir()
    shutil.copy(next(folder.glob("*-rasp4b-aarch64.tar.gz")), only_arm)
    with pytest.raises(TargetMismatchError, match="rasp4b-aarch64"):
        choose_package(only_arm, _profile("rpi4_64"))  # aarch64 code on this x86_64 machine
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactMissingError, match="no model packages"):
        choose_package(tmp_path / "empty", _profile("rpi4_64"))
    with pytest.raises(ArtifactMissingError, match="no such file"):
        choose_package(tmp_path / "missing", _profile("rpi4_64"))


def test_agent_without_any_model_says_so(tmp_path: Path) -> None:
    config = load_config({"thingName": "t-1", "stateDir": str(tmp_path / "state")})
    with pytest.raises(ConfigError, match="initialPackage nor modelDir"):
        AgentService(config=config).start()


def test_a_later_model_component_is_reported_not_served(built_models: Path,
                                                        tmp_path: Path) -> None:
    """A model component only installs the first model: a deployment that brings v2 while
    v1 serves leaves v1 serving and says so (model changes go through rollouts)."""
    import json

    from agent.wire.memory import MemoryBroker, MemoryTransport

    keys = keys_generate(tmp_path / "keys", "ctl")
    signer = Signer.from_file(keys.private, key_id="ctl")
    folders = {}
    for name, version in (("digits-v1", 1), ("digits-v2", 2)):
        folders[version] = tmp_path / f"component-{version}"
        build_package(built_models / name, "rasp4b-x86_64", signer=signer,
                      out_dir=folders[version], version=version)
    broker = MemoryBroker()
    seen: list[dict[str, object]] = []
    cloud = MemoryTransport(broker=broker)
    cloud.connect()
    cloud.subscribe("edge/#", lambda _topic, payload: seen.append(json.loads(payload)))
    for version in (1, 2):
        config = load_config({"thingName": "t-1", "stateDir": str(tmp_path / "state"),
                              "deviceRoot": str(board_root("rpi4_64")),
                              "initialPackage": str(folders[version]),
                              "trustedKeys": {"ctl": keys.public.read_text()},
                              "rateHz": 50, "source": "random"})
        service = AgentService(config=config, transport=MemoryTransport(broker=broker))
        service.start()
        try:
            assert service.router.blue.version == "digits-v1"
        finally:
            service.shutdown()
    unused = [m for m in seen if m.get("kind") == "model_component_unused"]
    assert len(unused) == 1, seen
    assert unused[0]["data"] == {"offered": 2, "serving": "1"}


def test_an_onnx_device_takes_the_onnx_package(component: tuple[Path, TrustStore],
                                               tmp_path: Path) -> None:
    """An agent configured for ONNX Runtime installs the folder's ONNX package, serves it
    with its ONNX settings (after a restart too) and says which runtime it runs."""
    import json

    from agent.device.runtime import OnnxBackend, OnnxConfig
    from agent.wire.memory import MemoryBroker, MemoryTransport

    folder, _ = component
    assert choose_package(folder, _profile("rpi4_64"), backend="onnx").name == \
        "digits-v1-onnx.tar.gz"
    assert choose_package(folder, _profile("rpi4_64")).name.endswith("-rasp4b-x86_64.tar.gz")
    broker = MemoryBroker()
    seen: list[dict[str, object]] = []
    cloud = MemoryTransport(broker=broker)
    cloud.connect()
    cloud.subscribe("edge/#", lambda _topic, payload: seen.append(json.loads(payload)))
    config = load_config({"thingName": "t-onnx", "stateDir": str(tmp_path / "state"),
                          "deviceRoot": str(board_root("rpi4_64")),
                          "initialPackage": str(folder),
                          "backend": {"type": "onnx", "intraOpThreads": 1},
                          "trustedKeys": {"ctl": str(folder.parent / "keys" / "ctl.pub")},
                          "rateHz": 50, "source": "random"})
    for _start in range(2):  # the second start loads the store's current version
        service = AgentService(config=config, transport=MemoryTransport(broker=broker))
        service.start()
        try:
            backend = service.router.blue.lane.backend
            assert isinstance(backend, OnnxBackend)
            assert backend.config == OnnxConfig(intra_op_threads=1)
            assert service.router.blue.version == "digits-v1"
        finally:
            service.shutdown()
    with ModelStore(tmp_path / "state" / "models") as store:
        current = store.current()
        assert current is not None and store.manifest(current)["backend"] == "onnx"
    registers = [m for m in seen if m.get("type") == "register"]
    assert registers and all(m["backend"] == "onnx" for m in registers), seen
