"""Shared fixtures, and ``tests/helpers`` on the import path of every test.

Tests mirror the package: ``tests/unit/<path of a module>/`` holds in-process tests of
one part, ``tests/integration/`` the tests that start processes, brokers or the
emulated nucleus, ``tests/helpers/`` what they share (``import waits``,
``from cloud import ...``), ``tests/fixtures/`` their data files.

``shared_broker`` is one mosquitto for the end-to-end tests that can share it, and
``s3_server`` one loopback S3-compatible server (moto) for the capture tests (each
uses its own bucket), ``neo_outputs`` SageMaker Neo outputs of a foreign-topology model, built once.

``built_models`` builds the reference models once per test session (about ten
seconds on two cores). Set ``EDGE_TEST_MODELS_DIR`` to build into a fixed
directory instead of a temporary one: the build is idempotent, so later
sessions only check stamps and start in about a second.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from agent.tools.brokers.mosquitto import MosquittoBroker
    from agent.tools.s3.local_server import LocalS3Server

# The repository first, so that ``models`` is always the reference-model package and never
# the test folder ``tests/unit/models`` that pytest's rootdir-relative imports can expose.
sys.path.insert(0, str(Path(__file__).parent / "helpers"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@pytest.fixture(scope="session")
def built_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding ``digits-v1``, ``digits-v2`` and the bad builds of v1."""
    from models.build import build_all

    fixed = os.environ.get("EDGE_TEST_MODELS_DIR")
    out = Path(fixed) if fixed else tmp_path_factory.mktemp("models")
    build_all(out, log=lambda _message: None)
    return out


@pytest.fixture(scope="session")
def vision_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``vision-v1``, the 224x224x3 float32 image model (models.vision), built once per
    session (about a second) in a folder of its own, beside ``EDGE_TEST_MODELS_DIR`` when
    that is set: the digits folder holds one model name."""
    from models.vision import build_vision

    fixed = os.environ.get("EDGE_TEST_MODELS_DIR")
    out = Path(f"{fixed.rstrip('/')}-vision") if fixed else tmp_path_factory.mktemp("vision")
    return build_vision(out, log=lambda _message: None)


@pytest.fixture(scope="session")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One mosquitto for the end-to-end tests of a session that can share it (each uses its
    own thing names and rollout ids); skipped, naming the package, where it is missing."""
    from agent.tools.brokers.mosquitto import MosquittoBroker, find_mosquitto

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    # No persistence: nothing restarts this broker, and autosaving the queues that a whole
    # session's persistent clients leave behind (megabytes, every second) costs CPU and
    # once crashed mosquitto 2.0.11 mid-save, taking every later test's broker with it.
    broker = MosquittoBroker(workdir=tmp_path_factory.mktemp("shared-broker"),
                             persistence=False)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3Server]:
    """One loopback S3-compatible server (moto) for the tests that can share it: each uses
    buckets of its own; skipped, naming the package, where moto is missing."""
    from agent.tools.s3.local_server import LocalS3Server, moto_missing_reason

    if reason := moto_missing_reason():
        pytest.skip(reason)
    server = LocalS3Server(tmp_path_factory.mktemp("s3-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def neo_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SageMaker Neo outputs of the foreign-topology ``fusion`` model, as Neo delivers them:
    ``model-ml_c5.tar.gz`` (x86_64) and ``model-rasp4b.tar.gz`` (real aarch64 code) for two
    model versions (``v1/``, ``v2/``), plus the ``colour`` image model for ``ml_c5``
    (``colour/model-ml_c5.tar.gz``). Built once per session (gcc, about a second)."""
    from foreign_neo import neo_tarball

    out = tmp_path_factory.mktemp("neo-outputs")
    for version in ("v1", "v2"):
        neo_tarball(out / version, "fusion", "ml_c5")
        neo_tarball(out / version, "fusion", "rasp4b", arch="aarch64")
    neo_tarball(out / "colour", "colour", "ml_c5")
    return out
