"""Hypothesis settings for the fuzz passes over the parsers that read hostile input.

``BRIEF`` runs in the default suite (seconds, derandomized so a failure reproduces on
every run); ``LONG`` is for the ``-m slow`` variant of the same property. Neither keeps
an example database: a crash a fuzz pass finds becomes an explicit regression test.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "database": None,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture]}
BRIEF = settings(max_examples=200, derandomize=True, **_COMMON)  # type: ignore[arg-type]
LONG = settings(max_examples=20_000, **_COMMON)  # type: ignore[arg-type]
