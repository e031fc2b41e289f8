"""``edge-agent demo fleet`` and ``demo loop``: the command lines of the emulated-fleet
and the capture-retrain-rollout demos."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from agent.cli.options import add_mqtt_tls_arguments
from agent.tools.demo.fleet_options import DemoOptions


def add_fleet_demo_arguments(demo_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    fleet = demo_sub.add_parser(
        "fleet", help="an emulated Greengrass fleet and three controller rollouts")
    fleet.add_argument("--out", type=Path, default=Path("build/demo"),
                       help="output folder for reports, logs and state (replaced)")
    fleet.add_argument("--models", type=Path, default=Path("build/models"),
                       help="built reference models (edge-agent models build)")
    fleet.add_argument("--devices", type=int, default=8, help="emulated devices (>= 4)")
    fleet.add_argument("--bake", type=float, default=6.0, help="canary bake / step watch, s")
    fleet.add_argument("--broker", help="use this broker (mqtt://HOST:PORT) instead of "
                                        "starting one")
    fleet.add_argument("--mosquitto", action="store_true",
                       help="start mosquitto rather than the embedded broker")
    add_mqtt_tls_arguments(fleet, endpoint_help="AWS IoT Core endpoint (mutual TLS), with "
                                                "--cert --key --ca")
    fleet.add_argument("--thing-prefix", default="demo",
                       help="thing names are PREFIX-<group>-<n>")
    fleet.set_defaults(func=cmd_demo_fleet)


def cmd_demo_fleet(args: argparse.Namespace) -> int:
    from agent.core.errors import ConfigError
    from agent.tools.demo.fleet_demo import run_demo

    if args.devices < 4:
        raise ConfigError("--devices must be at least 4 (two groups, canaries in each)")
    if not (args.models / "digits-v2" / "model.json").is_file():
        raise ConfigError(f"no built models in {args.models}: run "
                          f"`edge-agent models build --out {args.models}` first")

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds through every cleanup on the way out

    signal.signal(signal.SIGTERM, interrupt)
    options = DemoOptions(out=args.out.resolve(), models=args.models.resolve(),
                          devices=args.devices, bake_s=args.bake, broker=args.broker,
                          mosquitto=args.mosquitto,
                          endpoint=args.endpoint, cert=args.cert, key=args.key, ca=args.ca,
                          thing_prefix=args.thing_prefix)
    try:
        result = run_demo(options, say=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("\ninterrupted: every process the demo started has been stopped",
              file=sys.stderr)
        return 130
    return 0 if result.ok else 1


def add_loop_demo_arguments(demo_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    loop = demo_sub.add_parser(
        "loop", help="capture on the devices, retrain on the captures, roll the new model out")
    loop.add_argument("--out", type=Path, default=Path("build/demo-loop"),
                      help="output folder for the dataset, models, reports and logs (replaced)")
    loop.add_argument("--models", type=Path, default=Path("build/models"),
                      help="the reference models' folder (built there, or brought up to "
                           "date, first)")
    loop.add_argument("--devices", type=int, default=3, help="field devices (>= 2)")
    loop.add_argument("--min-captures", type=int, default=300,
                      help="uploaded captures to wait for before retraining")
    loop.add_argument("--margin", type=float, default=0.2,
                      help="v3 must beat v1 on the held-out shifted set by this much")
    loop.add_argument("--broker", help="use this broker (mqtt://HOST:PORT) instead of "
                                       "starting one")
    loop.add_argument("--json", action="store_true",
                      help="print summary.json at the end (the narrative goes to stderr)")
    loop.set_defaults(func=cmd_demo_loop)


def cmd_demo_loop(args: argparse.Namespace) -> int:
    from agent.core.errors import ConfigError
    from agent.tools.demo.loop_demo import run_loop_demo
    from agent.tools.demo.loop_options import LoopOptions

    if args.devices < 2:
        raise ConfigError("--devices must be at least 2 (a canary and the rest)")
    stream = sys.stderr if args.json else sys.stdout
    print(f"== the reference models in {args.models}: built, or reused when up to date",
          file=stream, flush=True)
    from models.build import build_all

    build_all(args.models.resolve(), log=lambda _line: None)

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds through every cleanup on the way out

    signal.signal(signal.SIGTERM, interrupt)
    options = LoopOptions(out=args.out.resolve(), models=args.models.resolve(),
                          devices=args.devices, min_captures=args.min_captures,
                          margin=args.margin, broker=args.broker)
    try:
        result = run_loop_demo(options, say=lambda line: print(line, file=stream, flush=True))
    except KeyboardInterrupt:
        print("\ninterrupted: every process the demo started has been stopped",
              file=sys.stderr)
        return 130
    if args.json:
        print((result.out / "summary.json").read_text().strip())
    return 0 if result.ok else 1
