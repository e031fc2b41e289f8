"""``edge-agent rollout …``: the operator's side of a rollout (the controller).

    edge-agent rollout start SPEC (--broker URL | --endpoint E --cert C --key K --ca CA)
                             --signing-key FILE --key-id ID [--db FILE] [--fleet FILE]
                             [--discover S] [--exit-on-pause]
    edge-agent rollout serve (--broker URL | ...) --signing-key FILE --key-id ID [--db FILE]
    edge-agent rollout status [ID] | list | promote ID | resume ID | abort ID
    edge-agent rollout report ID --out DIR

One controller runs on a database at a time (an advisory lock beside it): ``serve``
runs until stopped, ``start`` runs until its rollout ends and stays up while it is
paused. ``start`` while another controller holds the database hands the spec to that
controller and follows the rollout. ``promote``, ``resume`` and ``abort`` write a
request that the controller acts on within one tick and print its effect.

Exit codes: 0 the rollout succeeded (or the request was carried out), 2 refused
(bad spec, unknown rollout, a request the controller refused), 3 rolled back or
aborted, 4 paused (``start --exit-on-pause``), 5 a request was recorded but no
controller runs on the database to act on it.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from agent.cli.options import add_mqtt_tls_arguments, add_signing_arguments, signer_from_args
from agent.controller.controller import TERMINAL, FleetController
from agent.controller.errors import PlanError
from agent.controller.lock import ControllerLock
from agent.controller.progress import final_summary, progress_line, status_lines
from agent.controller.registry import FleetRegistry, load_fleet_file
from agent.controller.report import write_report
from agent.controller.spec import RolloutSpec, effective_guardrails, load_spec
from agent.controller.state import Assignment, ControllerState, RequestAction
from agent.core.errors import ConfigError
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig

EXIT = {"succeeded": 0, "rolled_back": 3, "aborted": 3, "paused": 4}
EXIT_REFUSED, EXIT_NO_CONTROLLER = 2, 5
ALIVE_S = 5.0  # a controller that ticked this recently acts on requests
HEARTBEAT_HINT_S = 30  # the agent's default heartbeat interval
PRINT_FIGURES_EVERY_S = 10.0


def add_rollout_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rollout = sub.add_parser("rollout", help="fleet rollouts (the controller)")
    verbs = rollout.add_subparsers(dest="rollout_command", required=True)
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", type=Path, default=Path("controller.db"),
                    help="the controller's state database")
    start = verbs.add_parser("start", parents=[db],
                             help="run a rollout to its end, in the foreground")
    start.add_argument("spec", type=Path)
    _add_controller_arguments(start)
    start.add_argument("--discover", type=float, default=10.0, metavar="S",
                       help="seconds to wait for the devices of the spec's groups to answer "
                            "the announce request (default 10; a fleet file's devices are "
                            "awaited until all answered)")
    start.add_argument("--exit-on-pause", action="store_true",
                       help="exit with code 4 when the rollout pauses (default: stay up "
                            "for promote, resume or abort)")
    start.add_argument("--settle", type=float, default=30.0, metavar="S",
                       help="after the end, seconds to wait for the devices' acks")
    start.add_argument("--json", action="store_true", help="print the final record as JSON")
    start.set_defaults(func=_start)
    serve = verbs.add_parser("serve", parents=[db],
                             help="run the controller until stopped: it acts on every "
                                  "rollout and request in the database")
    _add_controller_arguments(serve)
    serve.set_defaults(func=_serve)
    for name, helptext, func in (
            ("status", "a rollout's state, requests and acknowledgements", _status),
            ("promote", "advance a running or paused rollout to its next step now", _promote),
            ("resume", "judge a paused step again (after its cause was fixed)", _resume),
            ("abort", "roll every device that received green back", _abort),
            ("report", "write a JSON report and a PNG timeline", _report)):
        verb = verbs.add_parser(name, parents=[db], help=helptext)
        verb.add_argument("rollout_id", nargs="?" if name == "status" else None)
        if name == "report":
            verb.add_argument("--out", type=Path, required=True)
        elif name != "status":
            verb.add_argument("--wait", type=float, default=15.0, metavar="S",
                              help="seconds to wait for the controller's effect (default 15)")
        verb.add_argument("--json", action="store_true")
        verb.set_defaults(func=func)
    listing = verbs.add_parser("list", parents=[db], help="every rollout that started")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_list)


def _add_controller_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help="mqtt://HOST:PORT")
    add_mqtt_tls_arguments(parser, endpoint_help="AWS IoT Core endpoint (mutual TLS)",
                           key_help="TLS private key for --endpoint")
    add_signing_arguments(parser, what="the controller's commands")
    parser.add_argument("--fleet", type=Path, help="YAML {groups: {name: [things]}}")


def _mqtt(args: argparse.Namespace) -> MqttConfig:
    if args.broker:
        url = urlparse(args.broker)
        if not url.hostname:
            raise ConfigError(f"--broker wants mqtt://HOST:PORT, got {args.broker!r}")
        return MqttConfig(host=url.hostname, port=url.port or 1883,
                          client_id="edge-fleet-controller")
    if args.endpoint:
        return MqttConfig(host=args.endpoint, client_id="edge-fleet-controller",
                          cert_path=args.cert, key_path=args.key, ca_path=args.ca)
    raise ConfigError(f"rollout {args.rollout_command} needs --broker or --endpoint")


def _controller(args: argparse.Namespace, state: ControllerState) -> FleetController:
    registry = FleetRegistry(groups=load_fleet_file(args.fleet) if args.fleet else None)
    controller = FleetController(transport=MqttTransport(config=_mqtt(args)),
                                 signer=signer_from_args(args), state=state, registry=registry)
    controller.start()
    return controller


class _Stop:
    """SIGTERM and SIGINT end the controller's loop between two ticks."""

    def __init__(self) -> None:
        self.event = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._set)

    def _set(self, _signum: int, _frame: FrameType | None) -> None:
        self.event.set()


def _start(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    for line in ["effective guardrails:", *(f"  {g}" for g in
                                            effective_guardrails(spec.guardrails))]:
        print(line, flush=True)
    lock = ControllerLock(args.db)
    if not lock.acquire():
        return _hand_over(args, spec, lock.holder())
    stop = _Stop()
    with lock, ControllerState(path=args.db) as state:
        controller = _controller(args, state)
        try:
            if spec.name in controller.running:
                record = state.rollout(spec.name)
                assert record is not None
                print(f"resuming {spec.name}: {record.status} at step {record.step_index + 1}",
                      flush=True)
            elif (ended := state.rollout(spec.name)) is not None:
                # Its controller was stopped or killed after the end: say how it ended.
                print(f"{spec.name} already ended: a new rollout needs a new name", flush=True)
                return _follow(state, ended.rollout_id, args, stop, tick=controller.tick)
            else:
                _discover(controller, spec, args.discover)
            rollout_id = controller.start_rollout(spec)
            return _follow(state, rollout_id, args, stop, tick=controller.tick)
        finally:
            controller.stop()
            controller.transport.close()


def _discover(controller: FleetController, spec: RolloutSpec, wait_s: float) -> None:
    """Ask the spec's groups to announce themselves, wait for the answers, say who."""
    registry = controller.registry
    expected = set(registry.unregistered_in(spec.groups))
    print(f"discovering the devices of {', '.join(spec.groups)} (up to {wait_s:g} s) ...",
          flush=True)
    controller.announce(list(spec.groups))
    started = time.monotonic()
    seen, stable_since = -1, started
    while time.monotonic() - started < wait_s:
        controller.tick()
        count = len(registry.devices_in(spec.groups))
        if count != seen:
            seen, stable_since = count, time.monotonic()
        missing = set(registry.unregistered_in(spec.groups)) if expected else set()
        # Announces are answered within a second or two: once the count holds still
        # (and every device a fleet file names answered), everyone online has.
        if count and not missing and time.monotonic() - stable_since >= 2.0:
            break
        time.sleep(0.25)
    devices = registry.devices_in(spec.groups)
    print(f"discovered {len(devices)} device(s) in {time.monotonic() - started:.1f} s:",
          flush=True)
    for group in spec.groups:
        members = [d for d in devices if group in d.groups]
        classes: dict[str, int] = {}
        for d in members:
            classes[d.hardware_class] = classes.get(d.hardware_class, 0) + 1
        print(f"  {group}: {len(members)} ("
              + ", ".join(f"{c} x{n}" for c, n in sorted(classes.items())) + ")", flush=True)
    for thing in registry.unregistered_in(spec.groups):
        print(f"  {thing}: in the fleet file, not heard from", flush=True)
    if not devices:
        raise PlanError(
            f"no device of {', '.join(spec.groups)} answered within {wait_s:g} s: are they "
            "connected to this broker with the same topic prefix? (--discover S waits "
            f"longer; devices also heartbeat every {HEARTBEAT_HINT_S} s by default)")


def _hand_over(args: argparse.Namespace, spec: RolloutSpec, holder: str) -> int:
    """Another controller runs on the database: it starts the rollout, this follows it."""
    with ControllerState(path=args.db) as state:
        print(f"a controller (pid {holder}) runs on {args.db}: handing {spec.name} to it",
              flush=True)
        request = state.request(spec.name, "start", payload=spec.model_dump_json())
        effect = _await_request(state, request, args.discover + 30.0)
        if effect is None:
            print(f"the controller on {args.db} did not take the request", flush=True)
            return EXIT_NO_CONTROLLER
        print(effect, flush=True)
        if effect.startswith("refused"):
            return EXIT_REFUSED
        return _follow(state, spec.name, args, _Stop(), tick=None)


def _follow(state: ControllerState, rollout_id: str, args: argparse.Namespace, stop: _Stop,
            *, tick: Callable[[], object] | None) -> int:
    """Print the rollout's progress until it ends (``tick``: the controller to run)."""
    last_shape, last_print, paused_said = "", 0.0, ""
    while True:
        if tick is not None:
            tick()
        record = state.rollout(rollout_id)
        assert record is not None
        line, shape = progress_line(state, record)
        if shape != last_shape or time.monotonic() - last_print > PRINT_FIGURES_EVERY_S:
            print(line, flush=True)
            last_shape, last_print = shape, time.monotonic()
        if record.status in TERMINAL:
            break
        if record.status == "paused":
            if args.exit_on_pause:
                break
            if record.reason != paused_said:
                paused_said = record.reason
                print(f"  paused: {record.reason}\n  waiting for `edge-agent rollout "
                      f"promote|resume|abort {rollout_id} --db {args.db}`", flush=True)
        if stop.event.wait(1.0):
            print(f"stopped; {rollout_id} stays {record.status} in {args.db}: `rollout serve` "
                  "or `rollout start` with the same spec carries it on", flush=True)
            return EXIT.get(record.status, 1)
    if record.status in TERMINAL:
        _settle(state, rollout_id, args.settle, tick)
    print(f"{rollout_id}: {record.status}" + (f" ({record.reason})" if record.reason else ""),
          flush=True)
    if args.json:
        print(json.dumps(asdict(record)))
    return EXIT.get(record.status, 1)


def _settle(state: ControllerState, rollout_id: str, timeout_s: float,
            tick: Callable[[], object] | None) -> None:
    """Wait (bounded) for the devices to acknowledge how the rollout ended for them."""
    deadline = time.monotonic() + timeout_s
    final: list[Assignment] = []
    while True:
        record = state.rollout(rollout_id)
        assert record is not None
        final = [a for a in state.assignments(rollout_id)
                 if a.action in ("rollback", "confirm")]
        if all(a.outcome is not None for a in final) or time.monotonic() > deadline:
            break
        if tick is not None:
            tick()
        time.sleep(0.25)
    print(f"  {final_summary(final)}", flush=True)


def _serve(args: argparse.Namespace) -> int:
    lock = ControllerLock(args.db)
    if not lock.acquire():
        raise ConfigError(f"a controller (pid {lock.holder()}) already runs on {args.db}")
    stop = _Stop()
    with lock, ControllerState(path=args.db) as state:
        controller = _controller(args, state)
        print(f"controller on {args.db}: {len(controller.running)} rollout(s) running or "
              f"paused, {len(controller.registry.devices())} device(s) known; requests from "
              "`edge-agent rollout start|promote|resume|abort` are acted on within a second",
              flush=True)
        shapes = {r.rollout_id: progress_line(state, r)[1] for r in state.rollouts()}
        try:
            while not stop.event.is_set():
                for request, effect in controller.tick():
                    print(f"request #{request.id} {request.action} {request.rollout_id}: "
                          f"{effect}", flush=True)
                for record in state.rollouts():
                    line, shape = progress_line(state, record)
                    if shapes.get(record.rollout_id) != shape:
                        shapes[record.rollout_id] = shape
                        print(f"{record.rollout_id} {line.strip()}"
                              + (f" ({record.reason})" if record.reason else ""), flush=True)
                stop.event.wait(1.0)
        finally:
            controller.stop()
            controller.transport.close()
    return 0


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
            if args.json:
                print(json.dumps({**asdict(record), "spec": json.loads(record.spec_json),
                                  "requests": [asdict(r) for r in state.requests(
                                      record.rollout_id)],
                                  "assignments": [
                                      {"thing": a.thing, "step": a.step_index + 1,
                                       "action": a.action, "outcome": a.outcome,
                                       "code": a.code or None, "reason": a.reason}
                                      for a in state.assignments(record.rollout_id)]}))
            else:
                print("\n".join(status_lines(state, record)))
    return 0


def _list(args: argparse.Namespace) -> int:
    with _open(args) as state:
        for record in state.rollouts():
            print(json.dumps(asdict(record)) if args.json else
                  f"{record.rollout_id}\t{record.status}\tstep {record.step_index + 1}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    return _request(args, "promote", ("running", "paused"))


def _resume(args: argparse.Namespace) -> int:
    return _request(args, "resume", ("paused",))


def _abort(args: argparse.Namespace) -> int:
    return _request(args, "abort", ("running", "paused"))


def _request(args: argparse.Namespace, action: RequestAction,
             from_statuses: tuple[str, ...]) -> int:
    """Write the request, then wait for the controller's effect and print it."""
    with _open(args) as state:
        record = state.rollout(args.rollout_id)
        if record is None:
            raise ConfigError(f"no rollout {args.rollout_id!r} in {args.db}")
        if record.status not in from_statuses:
            raise ConfigError(f"cannot {action} {args.rollout_id}: it is {record.status}, "
                              f"not {' or '.join(from_statuses)}")
        request = state.request(args.rollout_id, action)
        alive = state.controller()
        if alive is None or time.time() - float(alive.get("tick_at", 0)) > ALIVE_S:
            print(f"{action} of {args.rollout_id} requested (#{request}), but no controller "
                  f"runs on {args.db}: `edge-agent rollout serve --db {args.db} ...` acts on "
                  "it when it starts", flush=True)
            return EXIT_NO_CONTROLLER
        effect = _await_request(state, request, args.wait)
        if effect is None:
            print(f"{action} of {args.rollout_id} requested (#{request}); the controller "
                  f"(pid {alive.get('pid')}) has not acted on it within {args.wait:g} s: "
                  f"see `edge-agent rollout status {args.rollout_id}`", flush=True)
            return EXIT_NO_CONTROLLER
        print(f"{args.rollout_id}: {action}: {effect}", flush=True)
        return EXIT_REFUSED if effect.startswith("refused") else 0


def _await_request(state: ControllerState, request_id: int, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        request = state.get_request(request_id)
        if request is not None and request.handled_at is not None:
            return request.effect
        time.sleep(0.2)
    return None


def _report(args: argparse.Namespace) -> int:
    with _open(args) as state:
        written = write_report(state, args.rollout_id, args.out)
    for path in written:
        print(path)
    if len(written) == 1:
        print("no PNG timeline: pip install 'edge-inference-agent[controller]'")
    return 0
