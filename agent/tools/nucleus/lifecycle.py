"""Component lifecycle: UpdateState, SubscribeToComponentUpdates, DeferComponentUpdate.

A component update is announced with a ``PreComponentUpdateEvent``. Each subscribed
component answers with DeferComponentUpdate: ``recheckAfterMs`` > 0 defers, and the
nucleus announces again after that long; 0 lets the update go on. A component that does
not answer within the timeout is passed over, as a real nucleus does. Once the update
goes on, subscribers get a ``PostComponentUpdateEvent``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from agent.tools.nucleus.errors import (
    NucleusError,
    invalid_arguments,
    resource_not_found,
    service_error,
)
from agent.tools.nucleus.operations import Body, Operation, Stream

_OP = "aws.greengrass#"
UpdateOutcome = Literal["accepted", "no-subscribers", "timed-out"]
REPORTABLE_STATES = ("RUNNING", "ERRORED")


@dataclass(frozen=True)
class StateReport:
    component: str
    state: str
    at: float  # time.monotonic()


@dataclass(frozen=True)
class Deferral:
    component: str
    deployment_id: str
    recheck_after_ms: int
    message: str | None


@dataclass(eq=False)
class ComponentUpdate:
    """A pending component update, as the test or operator that announced it sees it.
    Thread-safe to read."""

    deployment_id: str
    is_ggc_restarting: bool
    timeout_s: float
    announcements: int = 0
    deferrals: list[Deferral] = field(default_factory=list)
    outcome: concurrent.futures.Future[UpdateOutcome] = field(
        default_factory=concurrent.futures.Future)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def deferred(self) -> bool:
        with self._lock:
            return bool(self.deferrals)

    def wait(self, timeout_s: float | None = None) -> UpdateOutcome:
        """Block until the update went on; the outcome says why it could."""
        return self.outcome.result(timeout_s)


class Lifecycle:
    """Loop thread only, except for the ComponentUpdate handles it gives out."""

    def __init__(self, components: frozenset[str]) -> None:
        self._components = components
        self.reports: list[StateReport] = []
        self._subscribers: dict[str, list[Stream]] = {}
        self._waiting: dict[tuple[str, str], asyncio.Future[int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.updates: list[ComponentUpdate] = []

    def states(self, component: str) -> list[str]:
        return [r.state for r in self.reports if r.component == component]

    def announce(self, update: ComponentUpdate) -> None:
        self.updates.append(update)
        task = asyncio.get_running_loop().create_task(self._run(update))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, update: ComponentUpdate) -> None:
        try:
            outcome = await self._negotiate(update)
        except asyncio.CancelledError:
            update.outcome.set_exception(NucleusError("the nucleus stopped during the update"))
            raise
        self._broadcast({"postUpdateEvent": {"deploymentId": update.deployment_id}})
        update.outcome.set_result(outcome)

    async def _negotiate(self, update: ComponentUpdate) -> UpdateOutcome:
        while True:
            components = [name for name, streams in self._subscribers.items() if streams]
            if not components:
                return "no-subscribers"
            loop = asyncio.get_running_loop()
            waits = {name: loop.create_future() for name in components}
            for name, waiter in waits.items():
                self._waiting[(name, update.deployment_id)] = waiter
            with update._lock:
                update.announcements += 1
            self._broadcast({"preUpdateEvent": {"deploymentId": update.deployment_id,
                                                "isGgcRestarting": update.is_ggc_restarting}})
            try:
                _done, pending = await asyncio.wait(waits.values(), timeout=update.timeout_s)
            finally:
                for name in waits:
                    self._waiting.pop((name, update.deployment_id), None)
            if pending:
                return "timed-out"
            recheck_ms = max(waiter.result() for waiter in waits.values())
            if recheck_ms <= 0:
                return "accepted"
            await asyncio.sleep(recheck_ms / 1000)

    def _broadcast(self, event: Body) -> None:
        for streams in self._subscribers.values():
            for stream in list(streams):
                stream.send_event(f"{_OP}ComponentUpdatePolicyEvents", event)

    def operations(self) -> list[Operation]:
        async def update_state(stream: Stream, request: Body) -> Body:
            state = request.get("state")
            if state not in REPORTABLE_STATES:
                raise invalid_arguments(f"state must be one of {REPORTABLE_STATES}, got {state!r}")
            self.reports.append(StateReport(stream.component, state, time.monotonic()))
            return {}

        async def subscribe(stream: Stream, request: Body) -> Body:
            if stream.component not in self._components:
                raise resource_not_found(
                    "Component with given name not found currently in Greengrass",
                    resourceType="Component", resourceName=stream.component)
            streams = self._subscribers.setdefault(stream.component, [])

            def activate() -> None:
                streams.append(stream)
                stream.on_close(lambda: streams.remove(stream))

            stream.after_response(activate)
            return {}

        async def defer(stream: Stream, request: Body) -> Body:
            if not self._subscribers.get(stream.component):
                raise invalid_arguments("Component is not subscribed to component update events")
            deployment_id = request.get("deploymentId")
            if deployment_id is None:
                raise invalid_arguments(
                    "Cannot defer the update, the deployment ID provided was null")
            waiter = self._waiting.pop((stream.component, deployment_id), None)
            if waiter is None or waiter.done():
                raise service_error("Time limit to respond to PreComponentUpdateEvent exceeded")
            recheck_ms = int(request.get("recheckAfterMs") or 0)
            if recheck_ms > 0:
                for task_update in self._updates_for(deployment_id):
                    with task_update._lock:
                        task_update.deferrals.append(Deferral(
                            stream.component, deployment_id, recheck_ms, request.get("message")))
            waiter.set_result(recheck_ms)
            return {}

        return [Operation(f"{_OP}UpdateState", update_state),
                Operation(f"{_OP}SubscribeToComponentUpdates", subscribe, streaming=True),
                Operation(f"{_OP}DeferComponentUpdate", defer)]

    def _updates_for(self, deployment_id: str) -> list[ComponentUpdate]:
        return [u for u in self.updates if u.deployment_id == deployment_id]
