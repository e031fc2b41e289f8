"""``edge-agent demo fleet``: an emulated fleet under emulated Greengrass nuclei, and the
fleet controller running three rollouts on it.

1. digits v1 -> v2: a canary, then linear to every device; succeeds.
2. v2 -> ``slow``: the canary breaches the latency guardrail and is rolled back
   fleet-wide; a canary device that is offline then is rolled back when it returns.
3. v2 -> ``wrong`` with a shadow phase: stopped by agreement before any device serves it.

Every device is a real agent process started by its own emulated nucleus from the
Greengrass components ``edge-agent package component`` builds (recipe, install and run
steps, configuration, IPC authorization), talking to the controller through a real
MQTT broker. Everything started is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.controller.controller import FleetController
from agent.controller.report import write_report
from agent.controller.state import ControllerState
from agent.tools.demo.fleet_devices import EmulatedDevice
from agent.tools.demo.fleet_options import (
    GOOD_LABEL,
    KEY_ID,
    SLOW_LABEL,
    WRONG_LABEL,
    DemoOptions,
    rollout_specs,
)
from agent.tools.demo.fleet_rollouts import RolloutOutcome, drive, wait_until
from agent.tools.demo.fleet_setup import Broker, build_components, open_broker
from agent.tools.packaging.build import build_package
from agent.tools.packaging.keys import keys_generate
from agent.wire.mqtt import MqttTransport
from agent.wire.signing import Signer

Say = Callable[[str], None]
# (model, package version, reference for the golden vectors, the packages' label). The
# slow build has no export of its own to take golden outputs from; the wrong one
# reproduces its own export faithfully (it passes staging) and is caught by the shadow
# test's agreement.
ROLLOUT_MODELS = (("digits-v2", 2, None, GOOD_LABEL),
                  ("digits-v1-slow", 3, "digits-v1", SLOW_LABEL),
                  ("digits-v1-wrong", 4, None, WRONG_LABEL))


@dataclass(frozen=True)
class DemoResult:
    outcomes: list[RolloutOutcome]
    offline_device: str | None
    reports: list[Path]
    out: Path
    devices: dict[str, dict[str, Any]]  # EmulatedDevice.summary() at the end

    @property
    def ok(self) -> bool:
        return [o.status for o in self.outcomes] == ["succeeded", "rolled_back", "rolled_back"]


def rollout_packages(options: DemoOptions, signer: Signer) -> dict[str, dict[str, Any]]:
    """Signed packages of each rollout's candidate for every target the fleet reports, by
    the candidate's label."""
    targets = sorted({d.target for d in options.fleet()})
    packages: dict[str, dict[str, Any]] = {}
    for name, version, reference, label in ROLLOUT_MODELS:
        entries = {}
        for target in targets:
            path = build_package(options.models / name, f"{target}-x86_64", signer=signer,
                                 out_dir=options.out / "packages", version=version,
                                 reference=options.models / reference if reference else None)
            entries[target] = {"url": path.resolve().as_uri(), "version": version,
                               "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        packages[label] = entries
    return packages


def _device_config(options: DemoOptions, group: str, board: str,
                   public_key: str) -> dict[str, Any]:
    return {"thingGroups": [group], "board": board, "rateHz": options.rate_hz,
            "metricsIntervalSeconds": options.metrics_interval_s,
            "heartbeatIntervalSeconds": options.heartbeat_interval_s,
            "trustedKeys": {KEY_ID: public_key},
            "guardrails": {"minSamples": options.min_samples},
            # The rollouts' packages are files of this demo: the one folder stages may read.
            "packageDirs": [str((options.out / "packages").resolve())],
            # Many emulated devices share this machine: each API on a port of its own, and
            # no result stream (eight nuclei relaying results would load the two cores the
            # guardrails' short latency windows are measured on).
            "server": {"port": 0}, "results": {"enabled": False}, **options.extra}


@contextlib.contextmanager
def _fleet(options: DemoOptions, store: Path, broker: Broker, public_key: str,
           say: Say) -> Iterator[dict[str, EmulatedDevice]]:
    socket_dir = Path(tempfile.mkdtemp(prefix="edge-demo-", dir="/tmp"))  # short socket paths
    devices = {d.thing: EmulatedDevice(d, store=store, root=options.out / "devices" / d.thing,
                                       socket_dir=socket_dir, broker=broker.nucleus_link(d.thing),
                                       config=_device_config(options, d.group, d.board,
                                                             public_key))
               for d in options.fleet()}
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            for device in pool.map(_start, devices.values()):
                say(f"  {device.thing}: {device.device.board} in {device.device.group}, "
                    f"lifecycle {' -> '.join(_dedupe(device.states()))}")
        yield devices
    finally:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda d: d.stop(), devices.values()))
        shutil.rmtree(socket_dir, ignore_errors=True)


def _start(device: EmulatedDevice) -> EmulatedDevice:
    device.start()
    return device


def _dedupe(states: list[str]) -> list[str]:
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]


def run_demo(options: DemoOptions, *, say: Say = print) -> DemoResult:
    started = time.monotonic()
    out = options.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _log_to(out / "demo.log")
    say(f"== preparing in {out}: signing keys, signed model packages, Greengrass components")
    keys = keys_generate(out / "keys", KEY_ID)
    signer = Signer.from_file(keys.private, key_id=KEY_ID)
    store = build_components(options.models, keys.private, KEY_ID, out / "components", say=say)
    packages = rollout_packages(options, signer)
    specs = rollout_specs(options, packages)
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(open_broker(options, out / "broker"))
        say(f"== broker: {broker.describe}")
        state = stack.enter_context(ControllerState(path=out / "controller.db"))
        controller = FleetController(transport=MqttTransport(config=broker.client("controller")),
                                     signer=signer, state=state)
        controller.start()
        stack.callback(controller.transport.close)
        wait_until(controller.transport.is_connected, timeout_s=15,
                   what=f"the controller to connect to {broker.describe}")
        say(f"== starting {options.devices} emulated Greengrass devices "
            "(nucleus -> install -> run)")
        devices = stack.enter_context(_fleet(options, store, broker, keys.public.read_text(),
                                             say))
        wait_until(lambda: len(controller.registry.devices()) >= len(devices),
                   timeout_s=60, what="every device to register (their logs: "
                   f"{out / 'devices'}/<thing>/logs)")
        say(f"   {len(devices)} devices registered, serving "
            f"{_serving_summary(controller)}")
        outcomes, offline = _rollouts(options, controller, devices, specs, say)
        reports = [p for o in outcomes for p in write_report(state, o.rollout_id, out)]
        summaries = {thing: device.summary() for thing, device in devices.items()}
    result = DemoResult(outcomes=outcomes, offline_device=offline, reports=reports, out=out,
                        devices=summaries)
    (out / "summary.json").write_text(json.dumps(
        {"outcomes": [asdict(o) for o in outcomes], "offline_device": offline,
         "ok": result.ok, "elapsed_s": round(time.monotonic() - started, 1),
         "devices": summaries}, indent=2))
    say(summary_table(outcomes))
    say(f"\nreports: {', '.join(p.name for p in reports)} in {out}")
    say(f"demo {'finished' if result.ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return result


def _log_to(path: Path) -> None:
    """The controller's and the brokers' own log lines go to a file, not the narration."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_edge_demo", False)]:
        root.removeHandler(old)
        old.close()
    handler._edge_demo = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for chatty in ("amqtt", "transitions"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _serving_summary(controller: FleetController) -> str:
    counts: dict[str, int] = {}
    for device in controller.registry.devices():
        label = device.models.get("blue", "?")
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{label} x{n}" for label, n in sorted(counts.items()))


def _serving(controller: FleetController, things: list[str], label: str) -> bool:
    return all((d := controller.registry.get(t)) is not None and d.models.get("blue") == label
               for t in things)


def _rollouts(options: DemoOptions, controller: FleetController,
              devices: dict[str, EmulatedDevice], specs: list[dict[str, Any]],
              say: Say) -> tuple[list[RolloutOutcome], str | None]:
    things = sorted(devices)
    timeout = options.step_timeout_s * 6
    outcomes = [drive(controller, specs[0], say=say, timeout_s=timeout)]
    wait_until(lambda: _serving(controller, things, "digits-v2"), timeout_s=60,
               what="every device to serve digits-v2", tick=controller.tick)

    offline: list[str] = []

    def take_one_offline(rollout_id: str) -> None:
        if offline:
            return
        promoted = [a for a in controller.state.assignments(rollout_id, step_index=0)
                    if a.action == "promote" and a.outcome == "ok" and a.acked_at]
        # A second of serving the slow build (its trial lasts until the rollout ends).
        if promoted and time.time() - (promoted[0].acked_at or 0) > 1.0:
            thing = promoted[0].thing
            offline.append(thing)
            say(f"    {thing} goes offline while on trial of {SLOW_LABEL} (its nucleus "
                "and agent stop)")
            devices[thing].stop()

    outcomes.append(drive(controller, specs[1], say=say, timeout_s=timeout,
                          hook=take_one_offline))
    online = [t for t in things if t not in offline]
    wait_until(lambda: _serving(controller, online, "digits-v2"), timeout_s=60,
               what="the online devices to serve digits-v2 again", tick=controller.tick)
    if offline:
        thing = offline[0]
        say(f"    {thing} comes back online ...")
        devices[thing].start()
        wait_until(lambda: _serving(controller, offline, "digits-v2") and all(
            a.outcome is not None for a in controller.state.assignments(
                outcomes[1].rollout_id, thing=thing, action="rollback")), timeout_s=60,
            what=f"{thing} to be rolled back", tick=controller.tick)
        rollback = controller.state.assignments(outcomes[1].rollout_id, thing=thing,
                                                action="rollback")
        say(f"    {thing} serves digits-v2 again: its unfinished trial ended with its restart, "
            f"and the pending rollback was acknowledged ({rollback[-1].reason})"
            if rollback else f"    {thing} serves digits-v2 again")

    outcomes.append(drive(controller, specs[2], say=say, timeout_s=timeout))
    wait_until(lambda: _serving(controller, things, "digits-v2"), timeout_s=60,
               what="every device to serve digits-v2 after the shadow test",
               tick=controller.tick)
    return outcomes, offline[0] if offline else None


def summary_table(outcomes: list[RolloutOutcome]) -> str:
    rows = [("rollout", "strategy", "devices", "outcome", "decided in")]
    rows += [(o.rollout_id, o.strategy, str(o.devices), o.status, f"{o.decision_s:.1f} s")
             for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    reasons = [f"  {o.rollout_id}: {o.reason}" for o in outcomes if o.reason]
    return "\n== summary\n" + "\n".join(lines) + ("\n" + "\n".join(reasons) if reasons else "")
