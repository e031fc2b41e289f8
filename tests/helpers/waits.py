"""Polling for a condition in tests that talk to other processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    """The first truthy value of ``condition()`` within ``timeout_s``, else AssertionError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")
