"""``edge-agent`` (``python -m agent.cli``): the agent's command line.

Each top-level command is defined beside the code it runs (its sub-commands there too):

    run, device               here: the offline loop, the device profile
    models                    agent.cli.models: build the reference models, import your own
    capture                   agent.cli.capture: uploaded captures into a dataset, labels, export
    predict                   agent.cli.predict: one inference on a user's input
    serve                     agent.cli.serve: the agent itself
    keys, package             agent.cli.package: signing keys, model packages, components
    rollout                   agent.cli.rollout: the rollout controller
    fleet                     agent.cli.fleet: simulated fleets
    demo                      here; ``demo fleet`` and ``demo loop`` in agent.cli.demo
    bench                     here: benchmarks (agent.tools.bench)

``edge-agent --help`` lists every command with its one-line help, built from the parser
tree itself (:func:`leaf_commands`), so the list cannot drift from what parses;
``edge-agent COMMAND --help`` gives a command's options, ``edge-agent --version`` the
agent's version.

The default install is the device's (``serve``, ``run``, ``device``); a command that needs
an optional extra this install lacks says which, and how to add it, and exits 2
(:mod:`agent.cli.extras`).

Options mean one thing in every command: ``--cert``/``--key``/``--ca`` are the TLS client
credentials of a direct MQTT connection; ``--signing-key FILE --key-id ID`` is the
controller's Ed25519 signing key (both in :mod:`agent.cli.options`); a public key, as in
``serve --trusted-key ID=VALUE``, is PEM, base64 or a file holding either
(:func:`agent.wire.keys.public_key_from`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent import __version__
from agent.cli.extras import command_words, missing_extra, require_extras
from agent.core.errors import AgentError

if TYPE_CHECKING:
    from agent.device.platform.profile import DeviceProfile


def _add_device_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--device-root", type=Path, default=None,
                       help="read the device profile from this tree (emulates that board on "
                            "this machine's real architecture)")
    group.add_argument("--board", default=None,
                       help="emulate a bundled board: rpi4_64, rpi4_32, rpi3, jetson_nano_r32, "
                            "jetson_xavier_nx_r35, x86_laptop")


def _profile(args: argparse.Namespace) -> DeviceProfile:
    from agent.device.platform.profile import detect_profile

    if args.board is not None:
        from agent.tools.boards import board_root

        return detect_profile(root=board_root(args.board), emulate=True)
    if args.device_root is None:
        return detect_profile()
    return detect_profile(root=args.device_root, emulate=True)


def cmd_device(args: argparse.Namespace) -> int:
    profile = _profile(args)
    print(json.dumps(profile.to_dict()) if args.json else profile)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.cli.run import run_from_args

    return run_from_args(args, _profile(args))


def cmd_predict(args: argparse.Namespace) -> int:
    from agent.cli.predict import predict_from_args

    return predict_from_args(args, _profile(args))


def cmd_serve(args: argparse.Namespace) -> int:
    from agent.cli.serve import serve_main

    return serve_main(args)


def cmd_bench_telemetry(args: argparse.Namespace) -> int:
    from agent.tools.bench.telemetry import bench_telemetry_main

    code: int = bench_telemetry_main(args)
    return code


def cmd_demo_telemetry(args: argparse.Namespace) -> int:
    from agent.tools.demo.telemetry_demo import demo_telemetry_main

    return demo_telemetry_main(args)


def cmd_bench_swap(args: argparse.Namespace) -> int:
    from agent.tools.bench.swap import bench_swap_main

    code: int = bench_swap_main(args)
    return code


def cmd_bench_loop(args: argparse.Namespace) -> int:
    from agent.tools.bench.loop import bench_loop_main

    code: int = bench_loop_main(args)
    return code


def cmd_bench_api(args: argparse.Namespace) -> int:
    from agent.tools.bench.api import bench_api_main

    code: int = bench_api_main(args)
    return code


def cmd_bench_capture(args: argparse.Namespace) -> int:
    from agent.tools.bench.capture import bench_capture_main

    code: int = bench_capture_main(args)
    return code


def cmd_bench_flood(args: argparse.Namespace) -> int:
    from agent.tools.bench.flood import bench_flood_main

    code: int = bench_flood_main(args)
    return code


_DESCRIPTION = ("The edge inference agent (inference, telemetry, signed model swaps) and "
                "its operator tools (packages, Greengrass components, rollouts, fleets).")
_HELP_WIDTH = 100


def leaf_commands(parser: argparse.ArgumentParser,
                  path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every command of ``parser`` that runs something: its words after the program name
    (``("package", "component")``) and its one-line help, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {sub.dest: sub.help or "" for sub in action._get_subactions()}
            for name, child in action.choices.items():
                words = (*path, name)
                if any(isinstance(a, argparse._SubParsersAction) for a in child._actions):
                    yield from leaf_commands(child, words)
                else:
                    yield words, helps.get(name, "")


def commands_epilog(parser: argparse.ArgumentParser) -> str:
    """The ``commands:`` section of the top-level help, from ``parser``'s tree."""
    leaves = [(" ".join(words), text) for words, text in leaf_commands(parser)]
    column = max(len(name) for name, _ in leaves) + 4
    lines = ["commands (edge-agent COMMAND --help for its options):"]
    for name, text in leaves:
        lines += textwrap.wrap(text, width=_HELP_WIDTH, initial_indent=f"  {name:<{column - 2}}",
                               subsequent_indent=" " * column) or [f"  {name}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent",
                                     description=textwrap.fill(_DESCRIPTION, _HELP_WIDTH),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from agent.cli.run import add_frame_source_arguments

    run = sub.add_parser("run", help="run the inference loop on a model, offline")
    run.add_argument("--model", type=Path, required=True,
                     help="model directory or one Neo artifact directory")
    run.add_argument("--backend", choices=("dlr", "onnx"), default=None,
                     help="default: onnx for an ONNX model without Neo artifacts, else dlr")
    run.add_argument("--source", choices=("auto", "testset", "digits", "random", "shm",
                                          "images", "video", "camera"),
                     default="auto",
                     help="testset (or digits): replay the model's testset.npz; random: inputs "
                          "from the input spec; shm: a producer process over shared memory; "
                          "images, video, camera: frames from --source-path; "
                          "auto (default): testset when the model has one, else random")
    add_frame_source_arguments(run)
    run.add_argument("--rate", type=float, default=0.0, help="target inferences/s (0: unpaced)")
    run.add_argument("--duration", type=float, default=10.0, help="seconds to run")
    run.add_argument("--count", type=int, default=None, help="stop after this many inferences")
    run.add_argument("--check-every", type=int, default=1,
                     help="check top-1 against the label on every Nth labelled inference")
    run.add_argument("--threads", type=int, default=None, help="runtime threads")
    run.add_argument("--dlr-library", choices=("installed", "artifact"), default="installed",
                     help="which libdlr.so wins when the artifact ships its own")
    run.add_argument("--libdlr", type=Path, default=None, help="explicit libdlr.so path")
    run.add_argument("--json", action="store_true", help="print one JSON summary line only")
    _add_device_args(run)
    run.set_defaults(func=cmd_run)

    predict = sub.add_parser("predict", help="one inference on your own input (an array file "
                                             "or an image), printed as JSON")
    from agent.cli.predict import add_predict_arguments

    add_predict_arguments(predict)
    _add_device_args(predict)
    predict.set_defaults(func=cmd_predict)

    from agent.cli.fleet import add_fleet_arguments
    from agent.cli.package import add_package_arguments
    from agent.cli.rollout import add_rollout_arguments

    add_package_arguments(sub)
    add_rollout_arguments(sub)
    add_fleet_arguments(sub)

    serve = sub.add_parser("serve", help="run the agent: inference, telemetry, commands")
    from agent.cli.serve import add_serve_arguments

    add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    device = sub.add_parser("device", help="show the detected device profile")
    device.add_argument("--json", action="store_true")
    _add_device_args(device)
    device.set_defaults(func=cmd_device)

    from agent.cli.models import add_models_arguments

    add_models_arguments(sub)

    from agent.cli.capture import add_capture_arguments

    add_capture_arguments(sub)

    demo = sub.add_parser("demo", help="end-to-end demonstrations on this machine")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)
    tdemo = demo_sub.add_parser("telemetry", help="one emulated device and a cloud side")
    tdemo.add_argument("--models", type=Path, default=Path("build/models"))
    tdemo.add_argument("--board", default="jetson_nano_r32")
    tdemo.add_argument("--seconds", type=float, default=10.0)
    tdemo.set_defaults(func=cmd_demo_telemetry)
    from agent.cli.demo import add_fleet_demo_arguments, add_loop_demo_arguments

    add_fleet_demo_arguments(demo_sub)
    add_loop_demo_arguments(demo_sub)

    bench = sub.add_parser("bench", help="benchmarks (ratios measured in one run)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    bench_common = argparse.ArgumentParser(add_help=False)
    bench_common.add_argument("--json", action="store_true", help="print one JSON line")
    bench_common.add_argument("--models", type=Path, default=Path("build/models"))
    loop = bench_sub.add_parser("loop", parents=[bench_common],
                                help="inference loop vs. the runtimes' plain APIs")
    loop.add_argument("--rounds", type=int, default=7)
    loop.add_argument("--seconds", type=float, default=0.4, help="per loop per round")
    loop.add_argument("--rss-inferences", type=int, default=10_000)
    loop.set_defaults(func=cmd_bench_loop)
    tele = bench_sub.add_parser("telemetry", parents=[bench_common],
                                help="reporting cost and spool drain rate")
    tele.add_argument("--rounds", type=int, default=5)
    tele.add_argument("--seconds", type=float, default=3.0, help="per loop per round")
    tele.add_argument("--spool-seconds", type=float, default=3.0)
    tele.set_defaults(func=cmd_bench_telemetry)
    swap = bench_sub.add_parser("swap", parents=[bench_common], help="model changes under load")
    swap.add_argument("--rate", type=float, default=2000.0, help="inferences/s while flipping")
    swap.add_argument("--flips", type=int, default=100)
    swap.add_argument("--rounds", type=int, default=5, help="shadow-overhead rounds")
    swap.add_argument("--seconds", type=float, default=1.0, help="per shadow round and mode")
    swap.set_defaults(func=cmd_bench_swap)
    api = bench_sub.add_parser("api", parents=[bench_common],
                               help="local inference API vs. in-process loop and echo servers")
    api.add_argument("--vision", type=Path, default=Path("build/vision/vision-v1"),
                     help="the 224x224x3 model (built there when missing)")
    api.add_argument("--rounds", type=int, default=7)
    api.add_argument("--seconds", type=float, default=0.5, help="per path per round")
    api.add_argument("--alloc-requests", type=int, default=200,
                     help="requests traced per path for the allocation figure")
    api.add_argument("--stream-seconds", type=float, default=0.5,
                     help="per mode per round, result stream on/off")
    api.add_argument("--backend", choices=("dlr", "onnx"), default="dlr")
    api.add_argument("--no-pin", dest="pin", action="store_false",
                     help="do not pin the server and the clients to separate cores")
    api.add_argument("--markdown", action="store_true", help="print the README table")
    api.set_defaults(func=cmd_bench_api)
    flood = bench_sub.add_parser("flood", parents=[bench_common],
                                 help="inference under a command flood; controller ingest "
                                      "under a report flood")
    flood.add_argument("--seconds", type=float, default=2.0, help="per phase")
    flood.add_argument("--rounds", type=int, default=3,
                       help="flood phases, each between two unloaded ones")
    flood.add_argument("--flood-rate", type=float, default=2000.0,
                       help="hostile messages a second")
    flood.add_argument("--legit-devices", type=int, default=20,
                       help="devices reporting normally beside the flooding one")
    flood.set_defaults(func=cmd_bench_flood)
    capture = bench_sub.add_parser("capture", parents=[bench_common],
                                   help="loop throughput with capture on vs off; capture "
                                        "store write rate")
    capture.add_argument("--rounds", type=int, default=7)
    capture.add_argument("--seconds", type=float, default=0.4, help="per plan per round")
    capture.add_argument("--store-seconds", type=float, default=1.0,
                         help="seconds of store writes per capture size")
    capture.add_argument("--fill-timeout", type=float, default=30.0,
                         help="at most this long to use up the per-hour cap before the "
                              "capture-on rounds (their steady state)")
    capture.add_argument("--disk", type=Path, help="measure the store in a folder on this "
                                                   "disk (default: the system's temp folder)")
    capture.set_defaults(func=cmd_bench_capture)
    parser.epilog = commands_epilog(parser)  # after every command is added: none is left out
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    words = command_words(parser, args)
    try:
        require_extras(words)
        code: int = args.func(args)
    except (AgentError, ImportError) as err:
        needs = missing_extra(words, err)  # a module of an extra this install lacks
        if needs is not None:
            print(needs, file=sys.stderr)
            return 2
        if not isinstance(err, AgentError):
            raise
        print(f"edge-agent: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code


if __name__ == "__main__":
    raise SystemExit(main())
