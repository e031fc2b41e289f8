"""``edge-agent fleet …``: emulated fleets (:mod:`agent.tools.fleet_sim`).

    edge-agent fleet simulate (--broker mqtt://HOST:PORT | --embedded) [--devices N]
                              [--groups canary=0.05,fleet=0.95] [--bake S] [--json]
    edge-agent fleet devices  (--broker mqtt://HOST:PORT | --embedded) [--devices N]
                              [--groups ...] [--green LABEL=MEDIAN_MS[:AGREEMENT[:ERRORS]]]
                              [--breach LABEL[@GROUP]] [--seconds S] [--json]

``simulate`` runs a canary whose candidate breaks the latency guardrail through the real
controller and broker (:class:`~agent.tools.fleet_sim.rollout.ScenarioOptions`);
``devices`` runs protocol-level devices for a controller of your own
(:class:`~agent.tools.fleet_sim.simulate.SimulateOptions`). The option texts are parsed
here; the simulator takes the parsed values.
"""

from __future__ import annotations

import argparse
from urllib.parse import urlparse

from agent.cli.options import trusted_keys_from_args
from agent.tools.fleet_sim.fleet import DEFAULT_PROFILES
from agent.tools.fleet_sim.model import BreachSpec, ModelBehaviour, SimulationError
from agent.tools.fleet_sim.rollout import ScenarioOptions, simulate_rollout_main
from agent.tools.fleet_sim.simulate import SimulateOptions, simulate_main
from agent.wire.signing import TrustStore

DEFAULT_GROUPS = "canary=0.05,fleet=0.95"


def add_fleet_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    fleet = sub.add_parser("fleet", help="emulated fleets")
    verbs = fleet.add_subparsers(dest="fleet_command", required=True)
    simulate = verbs.add_parser(
        "simulate", help="a canary with a latency breach on N simulated devices, through the "
                         "real controller and broker")
    _add_broker_arguments(simulate)
    simulate.add_argument("--devices", type=int, default=1000)
    simulate.add_argument("--groups", default=DEFAULT_GROUPS)
    simulate.add_argument("--report-interval", type=float, default=10.0)
    simulate.add_argument("--eval-interval", type=float, default=10.0,
                          help="seconds between guardrail evaluations")
    simulate.add_argument("--bake", type=float, default=30.0)
    simulate.add_argument("--connections", type=int, default=4)
    simulate.add_argument("--timeout", type=float, default=300.0)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--json", action="store_true")
    simulate.set_defaults(func=_simulate)

    devices = verbs.add_parser("devices", help="N protocol-level devices in one process, "
                                               "for a controller of your own")
    _add_broker_arguments(devices)
    devices.add_argument("--devices", type=int, default=1000)
    devices.add_argument("--groups", default=DEFAULT_GROUPS,
                         help="NAME=SHARE,... splits the fleet; NAME,NAME puts all in each")
    devices.add_argument("--profiles", default=",".join(DEFAULT_PROFILES),
                         help="Neo targets the devices cycle through")
    devices.add_argument("--report-interval", type=float, default=10.0)
    devices.add_argument("--heartbeat-interval", type=float, default=30.0, help="0: none")
    devices.add_argument("--connections", type=int, default=4)
    devices.add_argument("--seconds", type=float, default=30.0)
    devices.add_argument("--seed", type=int, default=0)
    devices.add_argument("--inference-rate", type=float, default=20.0,
                         help="simulated inferences/s per device")
    devices.add_argument("--blue-version", default="digits-v1")
    devices.add_argument("--green", action="append", default=[],
                         metavar="LABEL=MEDIAN_MS[:AGREEMENT[:ERROR_RATE]]",
                         help="how a candidate behaves (repeatable; unknown labels act as blue)")
    devices.add_argument("--breach", metavar="LABEL[@GROUP]",
                         help="inject a breach of LABEL on a cohort (default group: canary)")
    devices.add_argument("--trusted-key", action="append", default=[], metavar="ID=VALUE",
                         help="controller public key: a key file, PEM or base64 (default: "
                              "a fresh key for the hook)")
    devices.add_argument("--json", action="store_true", help="print one JSON line")
    devices.set_defaults(func=_devices)


def _add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """``--broker`` or ``--embedded`` (:func:`_broker`)."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--broker", help="mqtt://HOST:PORT (plain TCP)")
    where.add_argument("--embedded", action="store_true",
                       help="start a local broker (mosquitto if installed, else amqtt)")


def _simulate(args: argparse.Namespace) -> int:
    options = ScenarioOptions(
        broker=_broker(args), devices=args.devices, groups=_groups(args.groups),
        report_interval_s=args.report_interval, eval_interval_s=args.eval_interval,
        bake_s=args.bake, connections=args.connections, timeout_s=args.timeout,
        seed=args.seed)
    return simulate_rollout_main(options, as_json=args.json)


def _devices(args: argparse.Namespace) -> int:
    trust: TrustStore | None = None
    if args.trusted_key:
        trust = TrustStore(keys=trusted_keys_from_args(args.trusted_key))
    breach: BreachSpec | None = None
    if args.breach:
        label, _, cohort = args.breach.partition("@")
        breach = BreachSpec(label=label, cohort=cohort or "canary")
    options = SimulateOptions(
        broker=_broker(args), devices=args.devices, groups=_groups(args.groups),
        profiles=tuple(p.strip() for p in args.profiles.split(",") if p.strip()),
        report_interval_s=args.report_interval,
        heartbeat_interval_s=args.heartbeat_interval or None,
        connections=args.connections, seconds=args.seconds, seed=args.seed,
        inference_rate_hz=args.inference_rate, blue_version=args.blue_version,
        green=_green(args.green), breach=breach, trust=trust)
    return simulate_main(options, as_json=args.json)


def _broker(args: argparse.Namespace) -> tuple[str, int] | None:
    """``--broker mqtt://HOST:PORT`` as host and port; None with ``--embedded``."""
    if not args.broker:
        return None
    url = urlparse(args.broker)
    if url.scheme != "mqtt" or not url.hostname:
        raise SimulationError(f"--broker wants mqtt://HOST:PORT, got {args.broker!r}")
    return url.hostname, url.port or 1883


def _groups(text: str) -> dict[str, float] | tuple[str, ...]:
    """``NAME=SHARE,...`` (a split by share) or ``NAME,NAME`` (every device in each)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if all("=" not in item for item in items):
        return tuple(items)
    try:
        return {name: float(share) for name, share in (item.split("=", 1) for item in items)}
    except ValueError as err:
        raise SimulationError(f"--groups wants NAME=SHARE,...: {text!r}") from err


def _green(items: list[str]) -> dict[str, ModelBehaviour]:
    """Each ``--green LABEL=MEDIAN_MS[:AGREEMENT[:ERROR_RATE]]``: how that candidate behaves."""
    out: dict[str, ModelBehaviour] = {}
    for item in items:
        label, _, spec = item.partition("=")
        parts = spec.split(":")
        try:
            out[label] = ModelBehaviour(
                median_ms=float(parts[0]),
                agreement=float(parts[1]) if len(parts) > 1 else 1.0,
                error_rate=float(parts[2]) if len(parts) > 2 else 0.0)
        except (ValueError, IndexError) as err:
            raise SimulationError(f"--green wants LABEL=MEDIAN_MS[:AGREEMENT[:ERRORS]], "
                                  f"got {item!r}") from err
    return out
