"""Many simulated devices in one process, over a few shared MQTT connections.

    awscrt threads    command callbacks: only enqueue
    scheduler thread  every device's work: registers, heartbeats, metrics, commands

Device ``i`` publishes on connection ``i % connections`` under its own topics
(``edge/<thing>/...``). Every connection subscribes to ``edge/+/commands`` and
``edge/groups/+/commands`` and hands a command only to its own devices, so each
device sees each command once. A group command is decoded and its signature verified
once per connection (what each member's ``CommandGate`` would compute identically);
each member's own ``ReplayGuard`` then admits or refuses it. Publishes are QoS 1 and
never waited for one by one: the scheduler stops only when ``max_inflight`` PUBACKs
are outstanding, and how late reports went out is measured (``max_lag_s``).
"""

from __future__ import annotations

import heapq
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import numpy as np

from agent import __version__
from agent.tools.fleet_sim.device import SimDevice
from agent.tools.fleet_sim.lanes import Out, SimContext
from agent.tools.fleet_sim.model import (
    BreachReport,
    BreachSpec,
    BucketModel,
    DeviceView,
    FleetStats,
    ModelBehaviour,
    SimulationError,
    assign_groups,
    resolve_profiles,
)
from agent.wire.codec import decode
from agent.wire.commands import Command
from agent.wire.errors import ProtocolError
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig
from agent.wire.signing import TrustStore
from agent.wire.topics import Topics, check_name, command_filters
from agent.wire.transport import TransportError

T = TypeVar("T")
_REGISTER, _HEARTBEAT, _METRICS = 0, 1, 2
DEFAULT_PROFILES = ("rasp4b", "jetson_nano", "linux_x86_64")


class SimulatedFleet:
    def __init__(self, *, broker_host: str, broker_port: int, devices: int,
                 groups: Mapping[str, float] | Sequence[str], trust: TrustStore,
                 profiles: Sequence[str] = DEFAULT_PROFILES, report_interval_s: float = 10.0,
                 heartbeat_interval_s: float | None = 30.0, connections: int = 4,
                 blue_version: str = "digits-v1", blue: ModelBehaviour | None = None,
                 green: Mapping[str, ModelBehaviour] | None = None,
                 breach: BreachSpec | None = None, blue_accuracy: float = 0.98,
                 inference_rate_hz: float = 20.0, trial_s: float = 600.0, seed: int = 0,
                 prefix: str = "edge", thing_prefix: str = "sim",
                 start_spread_s: float | None = None, max_inflight: int = 20_000,
                 speed_jitter: float = 0.1) -> None:
        if devices < 1 or connections < 1 or report_interval_s <= 0 or max_inflight < 1:
            raise SimulationError("devices, connections, report_interval_s and max_inflight "
                                  "must be positive")
        Topics(thing="x", prefix=prefix)  # validates the prefix
        self.broker_host, self.broker_port = broker_host, broker_port
        self.prefix = prefix
        self.report_interval_s = report_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.start_spread_s = report_interval_s if start_spread_s is None else start_spread_s
        self.max_inflight = max_inflight
        self.seed = seed
        self.ctx = SimContext(
            rng=np.random.default_rng(seed), ids=random.Random(seed), buckets=BucketModel(),
            blue=blue or ModelBehaviour(), green=dict(green or {}), breach=breach,
            blue_accuracy=blue_accuracy, inference_rate_hz=inference_rate_hz, trial_s=trial_s,
            trust=trust, agent_version=f"{__version__}+sim")
        specs = resolve_profiles(tuple(profiles))
        layout = random.Random(seed + 1)
        things = [check_name("thing name", f"{thing_prefix}-{i:05d}") for i in range(devices)]
        memberships = assign_groups(things, groups, layout)
        now = time.monotonic()
        self.devices: list[SimDevice] = [
            SimDevice(thing=thing, groups=memberships[i], profile=specs[i % len(specs)],
                      speed=specs[i % len(specs)].speed * float(np.exp(
                          layout.gauss(0.0, speed_jitter))),
                      connection=i % connections, blue_label=blue_version, ctx=self.ctx,
                      now=now)
            for i, thing in enumerate(things)]
        self._by_thing = {d.thing: d for d in self.devices}
        self._members: list[dict[str, list[SimDevice]]] = [{} for _ in range(connections)]
        for d in self.devices:
            for g in d.groups:
                self._members[d.connection].setdefault(g, []).append(d)
        self._topics = {d.thing: Topics(thing=d.thing, prefix=prefix) for d in self.devices}
        self._transports = [MqttTransport(config=MqttConfig(
            host=broker_host, port=broker_port, client_id=f"{thing_prefix}-fleet-{seed}-{k}",
            clean_session=True)) for k in range(connections)]
        self._inbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._heap: list[tuple[float, int, int]] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards the publish counters (awscrt threads)
        self._counts = dict.fromkeys(
            ("register", "heartbeat", "metrics", "ack", "events", "state", "commands",
             "rejected", "dropped_offline"), 0)
        self._inflight = self._confirmed = self._errors = 0
        self._max_lag = 0.0
        self.started_at: float | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def things(self) -> tuple[str, ...]:
        return tuple(d.thing for d in self.devices)

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Connect, subscribe, and begin: registers are spread over ``start_spread_s``."""
        for k, transport in enumerate(self._transports):
            transport.connect(timeout_s=timeout_s)
            if not transport.is_connected():
                self._close_transports()
                raise SimulationError(f"cannot reach mqtt://{self.broker_host}:"
                                      f"{self.broker_port} ({transport.last_error})")
            for topic_filter in command_filters(self.prefix):
                transport.subscribe(topic_filter, self._on_command(k))
        now = self.started_at = time.monotonic()
        spread = random.Random(self.seed + 2)
        for i, d in enumerate(self.devices):
            d.booted_at = d.advanced_at = now
            at = now + spread.uniform(0.0, self.start_spread_s)
            self._heap.append((at, _REGISTER, i))
            self._heap.append((at + self.report_interval_s, _METRICS, i))
            if self.heartbeat_interval_s:
                self._heap.append((at, _HEARTBEAT, i))
        heapq.heapify(self._heap)
        self._thread = threading.Thread(target=self._run, name="fleet-scheduler", daemon=True)
        self._thread.start()

    def stop(self, *, flush_s: float = 5.0) -> None:
        """Stop sending; wait up to ``flush_s`` for outstanding PUBACKs; disconnect."""
        self._stopping.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(10.0)
        deadline = time.monotonic() + flush_s
        while self._inflight and time.monotonic() < deadline:
            time.sleep(0.01)
        self._close_transports()

    def _close_transports(self) -> None:
        for transport in self._transports:
            transport.close()

    def __enter__(self) -> SimulatedFleet:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ---- control (runs on the scheduler thread) ---------------------------------------

    def call(self, fn: Callable[[], T], *, timeout_s: float = 10.0) -> T:
        """Run ``fn`` on the scheduler thread (where device state lives); its result."""
        future: Future[T] = Future()
        self._inbox.put(("call", fn, future))
        return future.result(timeout_s)

    def set_online(self, thing: str, online: bool, *, reboot: bool = False) -> None:
        """Offline: publish nothing, drop commands (traffic keeps being served and counted).
        Online again: register (a new boot with ``reboot``) and answer commands."""
        device = self._device(thing)

        def change() -> None:
            now = time.monotonic()
            if reboot:
                device.advance(now)
                device.reboot(now)
            was, device.online = device.online, online
            if online and (not was or reboot):
                self._send(device, [device.register(), device.heartbeat(now)])

        self.call(change)

    def view(self, thing: str) -> DeviceView:
        device = self._device(thing)
        return self.call(lambda: DeviceView(
            thing=device.thing, groups=device.groups, online=device.online,
            boot_id=device.boot_id, seq=device.seq,
            state=device.state_fields(time.monotonic())))

    def _device(self, thing: str) -> SimDevice:
        device = self._by_thing.get(thing)
        if device is None:
            raise SimulationError(f"no simulated device {thing!r}")
        return device

    # ---- figures -----------------------------------------------------------------------

    def stats(self) -> FleetStats:
        c = self._counts
        with self._lock:
            confirmed, errors, inflight = self._confirmed, self._errors, self._inflight
        sent = sum(c[k] for k in ("register", "heartbeat", "metrics", "ack", "events",
                                  "state"))
        return FleetStats(
            devices=len(self.devices), online=sum(d.online for d in self.devices),
            registers_sent=c["register"], heartbeats_sent=c["heartbeat"],
            reports_sent=c["metrics"], acks_sent=c["ack"], events_sent=c["events"],
            states_sent=c["state"], messages_sent=sent, commands_received=c["commands"],
            commands_rejected=c["rejected"], commands_dropped_offline=c["dropped_offline"],
            publish_confirmed=confirmed, publish_errors=errors, inflight=inflight,
            max_lag_s=round(self._max_lag, 3))

    def breach_report(self) -> BreachReport:
        started = [d.breach_started_at for d in self.devices if d.breach_started_at]
        cleared = [d.breach_cleared_at for d in self.devices if d.breach_cleared_at]
        return BreachReport(devices_breached=len(started), devices_cleared=len(cleared),
                            first_breach_at=min(started) if started else None,
                            last_cleared_at=max(cleared) if cleared else None)

    # ---- the scheduler -----------------------------------------------------------------

    def _on_command(self, connection: int) -> Callable[[str, bytes], None]:
        def handler(topic: str, payload: bytes) -> None:
            self._inbox.put(("command", connection, topic, payload))
        return handler

    def _run(self) -> None:
        heap, inbox = self._heap, self._inbox
        while not self._stopping.is_set():
            now = time.monotonic()
            done = 0
            while heap and heap[0][0] <= now and done < 500:
                if self._inflight >= self.max_inflight:
                    break
                due, kind, index = heapq.heappop(heap)
                self._scheduled(due, kind, self.devices[index], now)
                heapq.heappush(heap, (due + self._period(kind), kind, index))
                done += 1
            wait = 0.0 if done else min(max(heap[0][0] - now, 0.0), 0.05) if heap else 0.05
            if self._inflight >= self.max_inflight:
                wait = 0.001
            try:
                item = inbox.get(timeout=wait) if wait > 0 else inbox.get_nowait()
            except queue.Empty:
                continue
            while item is not None:
                self._handle(item)
                try:
                    item = inbox.get_nowait()
                except queue.Empty:
                    break

    def _period(self, kind: int) -> float:
        if kind == _METRICS:
            return self.report_interval_s
        if kind == _HEARTBEAT and self.heartbeat_interval_s:
            return self.heartbeat_interval_s
        return float("inf")  # registers are sent once per boot

    def _scheduled(self, due: float, kind: int, device: SimDevice, now: float) -> None:
        if kind == _METRICS:
            out = device.metrics(now)  # counters advance even while offline
        elif not device.online:
            return
        elif kind == _HEARTBEAT:
            out = device.heartbeat(now)
        else:
            out = device.register()
        if device.online:
            self._max_lag = max(self._max_lag, now - due) if kind == _METRICS else \
                self._max_lag
            self._send(device, [out])

    def _handle(self, item: tuple[Any, ...]) -> None:
        if item[0] == "call":
            _, fn, future = item
            try:
                future.set_result(fn())
            except Exception as err:  # handed back to the caller of call()
                future.set_exception(err)
            return
        _, connection, topic, payload = item
        parts = topic.split("/")
        now = time.monotonic()
        if len(parts) == 3 + self.prefix.count("/") and parts[-2] != "groups":
            device = self._by_thing.get(parts[-2])
            if device is not None and device.connection == connection:
                self._deliver(device, payload, topic, now, None)
            return
        members = self._members[connection].get(parts[-2], [])
        if not members:
            return
        verified: Command | ProtocolError
        try:
            verified = decode(payload, expect=Command)
            self.ctx.trust.verify(verified)
        except ProtocolError as err:
            verified = err
        for device in members:
            self._deliver(device, payload, topic, now, verified)

    def _deliver(self, device: SimDevice, payload: bytes, topic: str, now: float,
                 verified: Command | ProtocolError | None) -> None:
        if not device.online:
            self._counts["dropped_offline"] += 1
            return
        self._counts["commands"] += 1
        out = device.receive(payload, topic, now, verified)
        self._counts["rejected"] += sum(
            1 for channel, raw in out if channel == "events" and b"rejected_message" in raw)
        self._send(device, out)

    def _send(self, device: SimDevice, out: list[Out]) -> None:
        transport = self._transports[device.connection]
        topics = self._topics[device.thing]
        for channel, payload in out:
            self._counts[channel] += 1
            with self._lock:
                self._inflight += 1
            try:
                future = transport.publish(topics.up(channel), payload)
            except TransportError:
                future = Future()
                future.set_exception(TransportError("publish failed"))
            future.add_done_callback(self._published)

    def _published(self, future: Future[None]) -> None:
        failed = future.exception() is not None
        with self._lock:
            self._inflight -= 1
            if failed:
                self._errors += 1
            else:
                self._confirmed += 1
