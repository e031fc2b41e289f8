"""Shared fixtures.

``built_models`` builds the reference models once per test session (about ten
seconds on two cores). Set ``EDGE_TEST_MODELS_DIR`` to build into a fixed
directory instead of a temporary one: the build is idempotent, so later
sessions only check stamps and start in about a second.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def built_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding ``digits-v1``, ``digits-v2`` and the bad builds of v1."""
    from models.build import build_all

    fixed = os.environ.get("EDGE_TEST_MODELS_DIR")
    out = Path(fixed) if fixed else tmp_path_factory.mktemp("models")
    build_all(out, log=lambda _message: None)
    return out
