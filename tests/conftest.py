"""Shared fixtures, and ``tests/helpers`` on the import path of every test.

Tests mirror the package: ``tests/unit/<path of a module>/`` holds in-process tests of
one part, ``tests/integration/`` the tests that start processes, brokers or the
emulated nucleus, ``tests/helpers/`` what they share (``import waits``,
``from cloud import ...``), ``tests/fixtures/`` their data files.

``built_models`` builds the reference models once per test session (about ten
seconds on two cores). Set ``EDGE_TEST_MODELS_DIR`` to build into a fixed
directory instead of a temporary one: the build is idempotent, so later
sessions only check stamps and start in about a second.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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
