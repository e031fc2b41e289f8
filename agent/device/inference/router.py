"""Blue and green in one running agent: load, shadow, weight, promote, roll back.

Every change installs a new :class:`~agent.device.inference.plans.Plan` on the
loop, and its request-path twin (:mod:`~agent.device.inference.request_plans`), with
:meth:`InferenceLoop.use`; both land between two inferences, so application requests
see the same weights, shadow tests, promotes and rollbacks as the loop. A backend
that leaves service is closed only once the loop has finished a step under the
new plan, so no inference ever runs on a closed model. :meth:`VariantRouter.lanes`
and :meth:`VariantRouter.snapshot` are what reports read. With a result stream
(``results``), every plan it installs hands each served inference (and, when the stream
asks for them, each answered request) to the stream, and the stream is told which lane
is which variant of which model version. With capture hooks
(:meth:`VariantRouter.set_capture`), every plan it installs, loop and request path alike,
calls them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from agent.core.errors import AgentError
from agent.device.inference import plans, request_plans
from agent.device.inference.capture_hooks import Answered, CaptureHooks
from agent.device.inference.lane import Lane, LoopStats
from agent.device.inference.plans import Plan, ResultHook, ShadowStats
from agent.device.inference.request_plans import RequestPlan, RequestResultHook, ShadowWorker
from agent.device.inference.requests import RequestStats
from agent.device.inference.runner import InferenceLoop
from agent.device.runtime.base import Backend, allocate_inputs

WARM_UP_RUNS = 3


def _warm_up(backend: Backend) -> None:
    """Run a new model a few times on private buffers before it serves: a model's first
    runs are much slower (allocation, page faults, lazy runtime set-up), and that cost
    belongs on the command thread, not in the gap of a swap."""
    backend.bind(allocate_inputs(backend.inputs))
    for _ in range(WARM_UP_RUNS):
        backend.run()


class ResultTap(Protocol):
    """What the router needs of a result stream (:class:`agent.device.results.stream.
    ResultStream`)."""

    @property
    def on_result(self) -> ResultHook: ...

    @property
    def on_request(self) -> RequestResultHook | None: ...

    def serving(self, roles: Mapping[Lane, tuple[str, str]]) -> None: ...


class VariantError(AgentError):
    """A variant change that does not fit the current state (e.g. promote with no green)."""


@dataclass
class Role:
    lane: Lane
    version: str
    since: float = field(default_factory=time.monotonic)
    baseline: tuple[int, ...] = ()  # blue's counts when this green arrived (for windows)


@dataclass(frozen=True)
class LaneReport:
    """One loaded variant, for metrics: its role, its model and its lane's live counters."""

    variant: str  # "blue" or "green"
    model_version: str
    stats: LoopStats


@dataclass(frozen=True)
class RouterSnapshot:
    """The router's state, for state reports."""

    models: dict[str, str]  # variant -> model version, as :meth:`VariantRouter.models`
    mode: str  # "serve", "shadow" or "weighted"
    weights: tuple[float, float]  # (blue, green) percent
    green_trial: dict[str, object] | None  # green on trial in shadow or weighted mode


class VariantRouter:
    """Blue (serving) and an optional green (candidate) on one loop's inputs."""

    def __init__(self, *, loop: InferenceLoop, blue_version: str,
                 results: ResultTap | None = None) -> None:
        self.loop = loop
        self.results = results
        self._on_result = results.on_result if results is not None else None
        self._on_request = results.on_request if results is not None else None
        self._capture: CaptureHooks | None = None
        self.blue = Role(loop.lane, blue_version)
        self.green: Role | None = None
        self.previous: Role | None = None  # the old blue, kept loaded during a trial
        self.mode = "serve"
        self._sample_rate = 1.0  # shadow mode's share of inputs
        self.weights = (100, 0)
        self.shadow_stats = ShadowStats()
        self.request_stats = loop.requests.stats if loop.requests is not None \
            else RequestStats()
        self._green_lock = threading.Lock()  # green's runs: the loop's shadow, the worker's
        self._shadow_worker: ShadowWorker | None = None
        self._lock = threading.Lock()
        self._install(self._serve(self.blue.lane), "serve", (100, 0),
                      self._answer(self.blue))

    # ---- changes (command thread) ----------------------------------------------------

    def load_green(self, backend: Backend, version: str) -> None:
        """Bind a verified candidate to the loop's inputs; blue keeps serving alone."""
        with self._lock:
            if backend.inputs != self.blue.lane.backend.inputs:
                raise VariantError(f"{version} takes {list(backend.inputs)}, the serving "
                                   f"model takes {list(self.blue.lane.backend.inputs)}")
            old = self.green
            _warm_up(backend)
            self.green = Role(Lane.bind(backend, self.loop.inputs), version,
                              baseline=tuple(self.blue.lane.stats.histogram.counts))
            self.shadow_stats = ShadowStats()
            self._install(self._serve(self.blue.lane), "serve", (100, 0),
                          self._answer(self.blue))
        if old is not None:
            self._retire(old)

    def shadow(self, sample_rate: float) -> None:
        with self._lock:
            self._need_green("shadow")
            self._sample_rate = sample_rate
            self._install_shadow()

    def _install_shadow(self) -> None:
        green = self._need_green("shadow")
        every = max(1, round(1.0 / self._sample_rate))
        self._stop_shadow_worker()
        worker = self._shadow_worker = ShadowWorker(
            green.lane, self.shadow_stats, self._green_lock,
            on_compared=self._capture.shadowed if self._capture is not None else None)
        self._install(plans.shadow(self.loop.source.fill, self.blue.lane, green.lane,
                                   self.shadow_stats, every=every, lock=self._green_lock,
                                   on_result=self._on_result, capture=self._capture),
                      "shadow", (100, 0),
                      request_plans.shadow(self.blue.lane, self.blue.version, worker,
                                           every, self.request_stats,
                                           on_result=self._on_request,
                                           capture=self._request_capture()))

    def set_weights(self, blue: int, green: int) -> None:
        with self._lock:
            self._need_green("set weights")
            self._install_weights(blue, green)

    def _install_weights(self, blue: int, green: int) -> None:
        role = self._need_green("set weights")
        plan = self._serve(self.blue.lane) if green == 0 else \
            self._serve(role.lane) if green == 100 else \
            plans.weighted(self.loop.source.fill, self.blue.lane, role.lane, green,
                           check_every=self.loop.check_every, on_result=self._on_result,
                           capture=self._capture)
        answer = self._answer(self.blue) if green == 0 else \
            self._answer(role, "green") if green == 100 else \
            request_plans.weighted(self.blue.lane, role.lane, green,
                                   (self.blue.version, role.version), self.request_stats,
                                   on_result=self._on_request,
                                   capture=self._request_capture())
        self._install(plan, "weighted", (blue, green), answer)

    def set_capture(self, hooks: CaptureHooks | None) -> None:
        """Call ``hooks`` from every plan from now on (None: capture nothing): the current
        mode is installed again with them, between two inferences."""
        with self._lock:
            self._capture = hooks
            if self.mode == "shadow" and self.green is not None:
                self._install_shadow()
            elif self.mode == "weighted" and self.green is not None:
                self._install_weights(*self.weights)
            else:
                weights = self.weights
                lane = self.blue
                if self.green is not None and weights == (0, 100):
                    lane = self.green
                self._install(self._serve(lane.lane), self.mode, weights,
                              self._answer(lane, "green" if lane is self.green else "blue"))

    def promote(self) -> None:
        """Green becomes blue; the old blue stays loaded (idle) until the trial ends."""
        with self._lock:
            green = self._need_green("promote")
            retired, self.previous = self.previous, self.blue
            self.blue, self.green = green, None
            self._install(self._serve(green.lane), "serve", (100, 0), self._answer(green))
        if retired is not None:
            self._retire(retired)

    def rollback(self) -> str:
        """Back to the model that served before: undo a promote on trial, else drop green."""
        with self._lock:
            if self.previous is not None:
                dropped, self.blue, self.previous = self.blue, self.previous, None
            elif self.green is not None:
                dropped, self.green = self.green, None
            else:
                raise VariantError("nothing to roll back: no candidate and no trial")
            self._install(self._serve(self.blue.lane), "serve", (100, 0),
                          self._answer(self.blue))
        self._retire(dropped)
        return dropped.version

    def confirm(self) -> None:
        """The trial passed: unload the model that served before."""
        with self._lock:
            retired, self.previous = self.previous, None
        if retired is not None:
            self._retire(retired)

    # ---- internals -------------------------------------------------------------------

    def _need_green(self, what: str) -> Role:
        if self.green is None:
            raise VariantError(f"cannot {what}: no candidate model is staged")
        return self.green

    def _serve(self, lane: Lane) -> Plan:
        return plans.serve(self.loop.source.fill, lane, check_every=self.loop.check_every,
                           on_result=self._on_result, capture=self._capture)

    def _answer(self, role: Role, variant: str = "blue") -> RequestPlan:
        return request_plans.serve(role.lane, variant, role.version, self.request_stats,
                                   on_result=self._on_request,
                                   capture=self._request_capture())

    def _request_capture(self) -> Answered | None:
        return self._capture.request if self._capture is not None else None

    def _install(self, plan: Plan, mode: str, weights: tuple[int, int],
                 answer: RequestPlan) -> None:
        if self.results is not None:
            roles = {self.blue.lane: ("blue", self.blue.version)}
            if self.green is not None:
                roles[self.green.lane] = ("green", self.green.version)
            self.results.serving(roles)
        self.loop.use(plan, answer)
        if mode != "shadow":
            self._stop_shadow_worker()
        self.mode, self.weights = mode, weights

    def _stop_shadow_worker(self) -> None:
        """Stop the request path's shadow runs (after the one in progress, if any)."""
        worker, self._shadow_worker = self._shadow_worker, None
        if worker is not None:
            worker.stop()

    def _retire(self, role: Role, timeout_s: float = 10.0) -> None:
        """Close ``role``'s backend once no step can still be using it."""
        mark = self.loop.steps_done
        deadline = time.monotonic() + timeout_s
        while self.loop.running and self.loop.steps_done < mark + 2 \
                and time.monotonic() < deadline:
            time.sleep(0.001)
        self.loop.quiesce()  # a request answered on its caller's thread under the old plan
        role.lane.backend.close()

    # ---- views (any thread) ------------------------------------------------------------

    def roles(self) -> dict[Lane, tuple[str, str]]:
        """Which lane is which variant of which model version, now."""
        blue, green = self.blue, self.green
        roles = {blue.lane: ("blue", blue.version)}
        if green is not None:
            roles[green.lane] = ("green", green.version)
        return roles

    def models(self) -> dict[str, str]:
        out = {"blue": self.blue.version}
        if self.green is not None:
            out["green"] = self.green.version
        return out

    def lanes(self) -> list[LaneReport]:
        """Blue, then green when one is loaded: each with its lane's live counters."""
        blue, green = self.blue, self.green
        reports = [LaneReport("blue", blue.version, blue.lane.stats)]
        if green is not None:
            reports.append(LaneReport("green", green.version, green.lane.stats))
        return reports

    def snapshot(self) -> RouterSnapshot:
        """Models, mode, weights and, while green is shadowed or weighted, its trial."""
        blue, green, mode = self.blue, self.green, self.mode
        models = {"blue": blue.version}
        trial: dict[str, object] | None = None
        if green is not None:
            models["green"] = green.version
            if mode in ("shadow", "weighted"):
                trial = {"candidate": green.version, "kind": mode,
                         "elapsed_s": round(time.monotonic() - green.since, 3)}
        return RouterSnapshot(models=models, mode=mode, weights=self.weights, green_trial=trial)
