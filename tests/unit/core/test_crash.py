"""agent.core.crash: named crash points, ``name:N`` occurrences, and the list kept complete."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
from paths import REPO_ROOT

from agent.core.crash import CRASH_ENV, CRASH_POINTS, crash_point, parse_crash_spec

ROOT = REPO_ROOT


def test_specs_name_a_point_and_an_occurrence() -> None:
    assert parse_crash_spec("mid-prune") == ("mid-prune", 1)
    assert parse_crash_spec("before-pointer-rename:3") == ("before-pointer-rename", 3)
    for bad in ["no-such-point", "mid-prune:0", "mid-prune:x"]:
        with pytest.raises(ValueError):
            parse_crash_spec(bad)


def test_an_unlisted_name_is_a_programming_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CRASH_ENV, raising=False)
    crash_point("mid-prune")  # unset: nothing happens
    with pytest.raises(ValueError, match="not listed"):
        crash_point("mid-something")


def test_the_process_dies_by_sigkill_at_the_nth_time_the_point_is_reached() -> None:
    script = textwrap.dedent("""
        from agent.core.crash import crash_point
        for i in range(5):
            crash_point("mid-prune")  # another point: never fires
            print(i, flush=True)
            crash_point("during-trial")
        print("survived", flush=True)
    """)
    env = {**os.environ, CRASH_ENV: "during-trial:3"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.split() == ["0", "1", "2"]
    env[CRASH_ENV] = "during-trial"
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == -signal.SIGKILL and proc.stdout.split() == ["0"]


def test_every_listed_crash_point_is_used_in_the_agent() -> None:
    sources = "\n".join(path.read_text() for path in (ROOT / "agent").rglob("*.py")
                        if path.name != "crash.py")
    unused = [name for name in CRASH_POINTS
              if f'"{name}"' not in sources and f"'{name}'" not in sources]
    assert unused == [], "listed in CRASH_POINTS but referenced nowhere in agent/"
    called = set(re.findall(r"""crash_point\(\s*["']([a-z0-9-]+)["']""", sources))
    assert sorted(called - set(CRASH_POINTS)) == [], "reached but not listed"
    assert len(set(CRASH_POINTS)) == len(CRASH_POINTS)
