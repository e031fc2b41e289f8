"""Component lifecycles as real processes, with the states a Greengrass nucleus reports.

Per component, in dependency order: ``install`` (every deployment, as a nucleus runs it at
every launch; ``Skipif: exists PATH`` / ``onpath EXE``, ``!`` negating, skips a step), then
``startup`` (must exit 0) or ``run`` (kept running). Each step is ``sh -c SCRIPT`` in the
component's work folder with the recipe's ``Setenv`` (lifecycle, then step), in a session
of its own, its output appended to ``<root>/logs/<Name>.log``; whatever an install step
leaves running is killed when it exits. Default step timeouts are the nucleus's: install
and startup 120 s, shutdown 15 s, run none. ``bootstrap`` and ``recover`` are not run.

Nucleus-side states: NEW -> INSTALLED -> STARTING -> RUNNING (the run process started, or
startup exited 0) -> STOPPING -> FINISHED; a component with neither startup nor run goes
STARTING -> FINISHED; a run process that exits 0 by itself goes STOPPING -> FINISHED, a
non-zero exit (or failed or timed-out install/startup) ERRORED. Retries into BROKEN are
not emulated. Stopping runs the ``shutdown`` step, then sends SIGTERM to the process
group, waits the grace period (5 s by default, as the nucleus's ``Exec.close``) and sends
SIGKILL; the component then is FINISHED.

How a recipe's lifecycle becomes these steps: :mod:`~agent.tools.nucleus.steps`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.tools.nucleus.components import LifecycleError
from agent.tools.nucleus.steps import (
    DEFAULT_TIMEOUT_S,
    Phase,
    Step,
    lifecycle_steps,
    should_skip,
)

STOP_GRACE_S = 5.0
_RUNNERS: weakref.WeakSet[ComponentRunner] = weakref.WeakSet()

__all__ = ["DEFAULT_TIMEOUT_S", "STOP_GRACE_S", "ComponentRunner", "ComponentState", "Phase",
           "Step", "lifecycle_steps", "should_skip"]


@dataclass(frozen=True)
class ComponentState:
    """One entry of a component's timeline: ``source`` is ``nucleus`` for the lifecycle
    the nucleus drives, ``component`` for an UpdateState the component sent over IPC.
    Unpacks as ``(state, source)``; ``at`` (time.monotonic()) and ``detail`` (exit code,
    pid...) are attributes."""

    state: str
    source: Literal["nucleus", "component"]
    at: float
    detail: str = ""

    def __iter__(self) -> Iterator[str]:
        return iter((self.state, self.source))


def _kill_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)  # the session leader's pid is the group id


class ComponentRunner:
    """The lifecycle processes of a nucleus's components. Thread-safe."""

    def __init__(self, *, root_dir: Path,
                 env_for: Callable[[str, Mapping[str, str]], dict[str, str]]) -> None:
        self.root_dir = root_dir
        self._env_for = env_for  # (component, recipe Setenv) -> process environment
        self._lock = threading.Lock()
        self._states: dict[str, list[ComponentState]] = {}
        self._processes: dict[str, subprocess.Popen[bytes]] = {}  # run / startup
        self._steps: dict[str, dict[Phase, Step]] = {}
        self._started: list[str] = []  # start order
        self._stopping: set[str] = set()
        _RUNNERS.add(self)

    # ---- queries -------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.root_dir / "logs" / f"{name}.log"

    def work_dir(self, name: str) -> Path:
        return self.root_dir / "work" / name

    def states(self, name: str) -> list[ComponentState]:
        with self._lock:
            return list(self._states.get(name, []))

    def process(self, name: str) -> subprocess.Popen[bytes] | None:
        with self._lock:
            return self._processes.get(name)

    # ---- lifecycle -----------------------------------------------------------------

    def start(self, name: str, steps: dict[Phase, Step], *, deadline: float | None) -> None:
        """Install and start ``name``; LifecycleError when install or startup fails."""
        self.stop(name)  # a deployment again restarts it, as a nucleus restart does
        self.work_dir(name).mkdir(parents=True, exist_ok=True)
        self.log_path(name).parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._steps[name] = steps
            self._stopping.discard(name)
            if name in self._started:
                self._started.remove(name)
            self._started.append(name)
        self._record(name, "NEW")
        if "install" in steps:
            self._run_to_end(name, steps["install"], deadline)
        self._record(name, "INSTALLED")
        self._record(name, "STARTING")
        if "startup" in steps:
            self._run_to_end(name, steps["startup"], deadline, keep_group=True)
            self._record(name, "RUNNING", "startup exited 0")
        elif "run" in steps:
            step = steps["run"]
            env = self._env_for(name, step.setenv)
            if should_skip(step.skipif, env):
                self._record(name, "RUNNING", f"run skipped ({step.skipif})")
                return
            process = self._spawn(name, step, env)
            with self._lock:
                self._processes[name] = process
            self._record(name, "RUNNING", f"pid {process.pid}")
            threading.Thread(target=self._watch, args=(name, process), daemon=True,
                             name=f"watch-{name}").start()
        else:
            self._record(name, "FINISHED", "no startup or run step")

    def stop(self, name: str, grace_s: float | None = None) -> None:
        """Stop ``name`` if it runs: shutdown step, SIGTERM, ``grace_s``, SIGKILL."""
        grace = STOP_GRACE_S if grace_s is None else grace_s
        with self._lock:
            process = self._processes.pop(name, None)
            entries = self._states.get(name)
            if process is None and not (entries and entries[-1].state in ("RUNNING",
                                                                          "STARTING")):
                return
            self._stopping.add(name)
            steps = self._steps.get(name, {})
        self._record(name, "STOPPING")
        final = "FINISHED"  # as a nucleus: a failed shutdown script is only logged,
        if "shutdown" in steps:  # one that times out leaves the component ERRORED
            try:
                self._run_to_end(name, steps["shutdown"], None, record=False)
            except LifecycleError as err:
                self._log(name, f"[shutdown] {err}")
                final = "ERRORED" if err.timed_out else final
        detail = "stopped"
        if process is not None and process.poll() is not None:
            detail = f"its process had exited {process.returncode}"
        elif process is not None:
            _kill_group(process, signal.SIGTERM)
            try:
                process.wait(grace)
                detail = f"exited {process.returncode} on SIGTERM"
            except subprocess.TimeoutExpired:
                _kill_group(process, signal.SIGKILL)
                process.wait()
                detail = f"killed with SIGKILL after {grace:g} s"
        if process is not None:
            _kill_group(process, signal.SIGTERM)  # what the run or startup script left
            _kill_group(process, signal.SIGKILL)
        self._log(name, f"[stop] {detail}")
        self._record(name, final, detail)

    def stop_all(self, grace_s: float | None = None) -> None:
        """Stop every component, dependents first."""
        with self._lock:
            order = list(reversed(self._started))
        for name in order:
            self.stop(name, grace_s)

    def kill_all(self) -> None:
        """Last resort (interpreter exit): SIGKILL every process group still there."""
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            _kill_group(process, signal.SIGKILL)

    # ---- internals -----------------------------------------------------------------

    def _record(self, name: str, state: str, detail: str = "") -> None:
        with self._lock:
            self._states.setdefault(name, []).append(
                ComponentState(state, "nucleus", time.monotonic(), detail))
        self._log(name, f"[state] {state}" + (f" ({detail})" if detail else ""))

    def _log(self, name: str, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with contextlib.suppress(OSError), self.log_path(name).open("a") as log:
            log.write(f"{stamp} {line}\n")  # (the root folder may be gone at close)

    def _spawn(self, name: str, step: Step, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        self._log(name, f"[{step.phase}] sh -c {step.script!r}")
        with self.log_path(name).open("ab") as log:
            return subprocess.Popen(["sh", "-c", step.script], cwd=self.work_dir(name),
                                    env=dict(env), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def _run_to_end(self, name: str, step: Step, deadline: float | None, *,
                    keep_group: bool = False, record: bool = True) -> None:
        """Run a step to its end; LifecycleError (and ERRORED, if ``record``) when it
        exits non-zero or times out."""
        env = self._env_for(name, step.setenv)
        if should_skip(step.skipif, env):
            self._log(name, f"[{step.phase}] skipped: {step.skipif}")
            return
        timeout = step.timeout_s
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        process = self._spawn(name, step, env)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process, signal.SIGKILL)
            process.wait()
            if record:
                self._record(name, "ERRORED", f"{step.phase} timed out after {timeout:g} s")
            raise LifecycleError(f"{name}: {step.phase} step timed out after {timeout:g} s; "
                                 f"see {self.log_path(name)}", component=name,
                                 log_path=self.log_path(name), timed_out=True) from None
        finally:
            if not keep_group:
                _kill_group(process, signal.SIGKILL)
        self._log(name, f"[{step.phase}] exited {code}")
        if keep_group:
            with self._lock:
                self._processes[name] = process  # stop() signals what startup left running
        if code != 0:
            if record:
                self._record(name, "ERRORED", f"{step.phase} exited {code}")
            raise LifecycleError(f"{name}: {step.phase} step exited {code}; see "
                                 f"{self.log_path(name)}", component=name,
                                 log_path=self.log_path(name))

    def _watch(self, name: str, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        with self._lock:
            if name in self._stopping or self._processes.get(name) is not process:
                return  # stop() records the outcome
            del self._processes[name]
        self._log(name, f"[run] exited {code}")
        if code == 0:
            self._record(name, "STOPPING", "run exited 0")
            self._record(name, "FINISHED")
        else:
            self._record(name, "ERRORED", f"run exited {code}")
        _kill_group(process, signal.SIGKILL)


@atexit.register
def _kill_leftovers() -> None:
    for runner in list(_RUNNERS):
        runner.kill_all()
