"""``edge-agent rollout …`` and ``edge-agent fleet simulate``: the operator's side.

    edge-agent rollout start SPEC --broker URL --key KEY --key-id ID [--db FILE]
    edge-agent rollout status [ID] | list | promote ID | abort ID | report ID --out DIR

``start`` runs the controller in the foreground until the rollout ends (or is
paused), printing each step's progress; the other commands work on the
controller's database, also while a controller runs: ``abort`` rolls every
device that received green back at the controller's next tick, ``promote``
sends a paused rollout on to its next step.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlparse

from agent.cli_mqtt import add_mqtt_tls_arguments
from agent.errors import ConfigError
from agent.fleet.controller import TERMINAL, FleetController
from agent.fleet.registry import FleetRegistry, load_fleet_file
from agent.fleet.report import write_report
from agent.fleet.spec import load_spec
from agent.fleet.state import ControllerState, RolloutRecord, RolloutStatus
from agent.protocol.signing import Signer
from agent.transport.mqtt import MqttTransport
from agent.transport.mqtt_config import MqttConfig

EXIT = {"succeeded": 0, "rolled_back": 3, "aborted": 3, "paused": 4}


def add_rollout_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rollout = sub.add_parser("rollout", help="fleet rollouts (the controller)")
    verbs = rollout.add_subparsers(dest="rollout_command", required=True)
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", type=Path, default=Path("controller.db"),
                    help="the controller's state database")
    start = verbs.add_parser("start", parents=[db],
                             help="run a rollout to its end, in the foreground")
    start.add_argument("spec", type=Path)
    start.add_argument("--broker", help="mqtt://HOST:PORT")
    add_mqtt_tls_arguments(start, endpoint_help="AWS IoT Core endpoint (mutual TLS)",
                           key_flag="--key-file", key_help="TLS private key for --endpoint")
    start.add_argument("--key", type=Path, required=True, help="controller signing key")
    start.add_argument("--key-id", required=True)
    start.add_argument("--fleet", type=Path, help="YAML {groups: {name: [things]}}")
    start.add_argument("--discover", type=float, default=10.0,
                       help="seconds to collect device registrations before planning")
    start.add_argument("--settle", type=float, default=30.0,
                       help="after a rollback, seconds to wait for the devices' acks")
    start.add_argument("--json", action="store_true", help="print the final record as JSON")
    start.set_defaults(func=_start)
    for name, helptext, func in (("status", "a rollout's state", _status),
                                 ("promote", "send a paused rollout on", _promote),
                                 ("abort", "roll a rollout back fleet-wide", _abort),
                                 ("report", "write a JSON report", _report)):
        verb = verbs.add_parser(name, parents=[db], help=helptext)
        verb.add_argument("rollout_id", nargs="?" if name == "status" else None)
        if name == "report":
            verb.add_argument("--out", type=Path, required=True)
        verb.add_argument("--json", action="store_true")
        verb.set_defaults(func=func)
    listing = verbs.add_parser("list", parents=[db], help="every rollout")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_list)


def _mqtt(args: argparse.Namespace) -> MqttConfig:
    if args.broker:
        url = urlparse(args.broker)
        if not url.hostname:
            raise ConfigError(f"--broker wants mqtt://HOST:PORT, got {args.broker!r}")
        return MqttConfig(host=url.hostname, port=url.port or 1883,
                          client_id="edge-fleet-controller")
    if args.endpoint:
        return MqttConfig(host=args.endpoint, client_id="edge-fleet-controller",
                          cert_path=args.cert, key_path=args.key_file, ca_path=args.ca)
    raise ConfigError("rollout start needs --broker or --endpoint")


def _start(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    registry = FleetRegistry(groups=load_fleet_file(args.fleet) if args.fleet else None)
    with ControllerState(path=args.db) as state:
        controller = FleetController(transport=MqttTransport(config=_mqtt(args)),
                                     signer=Signer.from_file(args.key, key_id=args.key_id),
                                     state=state, registry=registry)
        controller.start()
        print(f"collecting registrations for {args.discover:g} s ...", flush=True)
        time.sleep(args.discover)
        print(f"{len(registry.devices_in(spec.groups))} device(s) in {', '.join(spec.groups)}")
        rollout_id = controller.start_rollout(spec)
        last = ""
        while True:
            controller.tick()
            record = state.rollout(rollout_id)
            assert record is not None
            line = _progress(controller, record)
            if line != last:
                print(line, flush=True)
                last = line
            if record.status in (*TERMINAL, "paused"):
                break
            time.sleep(1.0)
        if record.status in ("rolled_back", "aborted"):
            _settle(controller, rollout_id, args.settle)
        controller.transport.close()
        print(f"{rollout_id}: {record.status} {record.reason}".rstrip())
        if args.json:
            print(json.dumps(asdict(record)))
        return EXIT.get(record.status, 1)


def _settle(controller: FleetController, rollout_id: str, timeout_s: float) -> None:
    """Wait (bounded) for the devices to acknowledge their rollback."""
    deadline = time.monotonic() + timeout_s
    while True:
        rollbacks = controller.state.assignments(rollout_id, action="rollback")
        acked = sum(a.outcome is not None for a in rollbacks)
        if acked == len(rollbacks) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    print(f"  {acked}/{len(rollbacks)} device(s) acknowledged the rollback"
          + (f"; {len(rollbacks) - acked} still pending: a controller rolls them back when "
             "they return" if acked < len(rollbacks) else ""), flush=True)


def _progress(controller: FleetController, record: RolloutRecord) -> str:
    run = controller.running.get(record.rollout_id)
    name = run.steps[record.step_index].name if run else "-"
    acks = controller.state.assignments(record.rollout_id, step_index=record.step_index)
    done = sum(a.outcome is not None for a in acks)
    verdict = run.verdict.status if run and run.verdict else "-"
    return (f"  [{record.status}] step {record.step_index + 1} {name}: {done}/{len(acks)} "
            f"commands acknowledged, guardrails {verdict}")


def _open(args: argparse.Namespace) -> ControllerState:
    if not args.db.exists():
        raise ConfigError(f"no controller database at {args.db}")
    return ControllerState(path=args.db)


def _status(args: argparse.Namespace) -> int:
    with _open(args) as state:
        records = [state.rollout(args.rollout_id)] if args.rollout_id else state.rollouts()
        for record in records:
            if record is None:
                raise ConfigError(f"no rollout {args.rollout_id!r}")
            by_step: dict[int, list[str]] = {}
            for a in state.assignments(record.rollout_id):
                by_step.setdefault(a.step_index, []).append(f"{a.thing}:{a.action}="
                                                            f"{a.outcome or 'pending'}")
            if args.json:
                print(json.dumps({**asdict(record), "assignments": by_step}))
            else:
                print(f"{record.rollout_id}: {record.status} at step {record.step_index + 1}"
                      f" {record.reason}".rstrip())
                for step, items in sorted(by_step.items()):
                    print(f"  step {step + 1}: {' '.join(items)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _open(args) as state:
        for record in state.rollouts():
            print(json.dumps(asdict(record)) if args.json else
                  f"{record.rollout_id}\t{record.status}\tstep {record.step_index + 1}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    return _operator(args, "promote", from_statuses=("paused",), to="running",
                     reason="promoted by operator", refusal="is not paused")


def _abort(args: argparse.Namespace) -> int:
    return _operator(args, "abort", from_statuses=("running", "paused"), to="aborted",
                     reason="aborted by operator", refusal="is not running or paused")


def _operator(args: argparse.Namespace, action: str, *, from_statuses: tuple[str, ...],
              to: RolloutStatus, reason: str, refusal: str) -> int:
    """Set a rollout's status for the controller's next tick, and log who did it."""
    with _open(args) as state:
        record = state.rollout(args.rollout_id)
        if record is None or record.status not in from_statuses:
            raise ConfigError(f"{args.rollout_id} {refusal}")
        state.set_status(args.rollout_id, to, reason=reason)
        state.log(args.rollout_id, "operator", detail={"action": action})
    return 0


def _report(args: argparse.Namespace) -> int:
    with _open(args) as state:
        written = write_report(state, args.rollout_id, args.out)
    for path in written:
        print(path)
    if len(written) == 1:
        print("no PNG timeline: pip install 'edge-inference-agent[controller]'")
    return 0


def add_fleet_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from agent.fleet.sim_rollout import add_arguments, simulate_rollout_main
    from agent.fleet.simulate import add_simulate_arguments, simulate_main

    fleet = sub.add_parser("fleet", help="emulated fleets")
    verbs = fleet.add_subparsers(dest="fleet_command", required=True)
    simulate = verbs.add_parser(
        "simulate", help="a canary with a latency breach on N simulated devices, through the "
                         "real controller and broker")
    add_arguments(simulate)
    simulate.set_defaults(func=simulate_rollout_main)
    devices = verbs.add_parser("devices", help="N protocol-level devices in one process, "
                                               "for a controller of your own")
    add_simulate_arguments(devices)
    devices.set_defaults(func=lambda a: simulate_main(a))


