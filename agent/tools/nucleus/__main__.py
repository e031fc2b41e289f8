"""``python -m agent.tools.nucleus``: serve an emulated nucleus for a recipe.

    python -m agent.tools.nucleus --recipe recipes/com.edgeinference.Agent.yaml \\
        --broker 127.0.0.1:1883 --thing demo-1 [--socket /tmp/gg/ipc.socket] [--run]

Prints the ``export`` lines a component needs (socket path, SVCUID, thing name, and the
token exchange service's URI and token when the recipe depends on it), then serves until
interrupted. ``--run`` also starts the recipe's lifecycle ``run`` script.

Or deploy components from a component store (``recipes/``, ``artifacts/``) and run their
lifecycles until interrupted, then stop them (SIGTERM, then SIGKILL)::

    python -m agent.tools.nucleus --store greengrass-build \\
        --component com.edgeinference.Agent[=0.1.0] --provided variant.DLR \\
        --thing demo-1 --broker 127.0.0.1:1883 [--root /tmp/gg]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import Any

from agent.tools.greengrass.recipe import Recipe, RecipeError
from agent.tools.nucleus.components import DeploymentError
from agent.tools.nucleus.errors import NucleusError
from agent.tools.nucleus.server import EmulatedNucleus


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent.tools.nucleus",
                                     description="Serve an emulated Greengrass nucleus.")
    parser.add_argument("--recipe", action="append", default=[],
                        help="component recipe (YAML or JSON); repeat for more components")
    parser.add_argument("--store", default=None,
                        help="component store (recipes/, artifacts/) to deploy from")
    parser.add_argument("--component", action="append", default=[], metavar="NAME[=VERSION]",
                        help="component to deploy from --store (default: newest version); "
                             "repeat for more")
    parser.add_argument("--provided", action="append", default=[], metavar="NAME",
                        help="an aws.greengrass.* or variant.DLR dependency the platform "
                             "provides (not in the store); repeatable")
    parser.add_argument("--root", default=None,
                        help="nucleus root folder (packages/, work/, logs/; default: a "
                             "temporary folder)")
    parser.add_argument("--thing", required=True, help="the device's IoT thing name")
    parser.add_argument("--broker", default=None,
                        help="host:port of the MQTT broker playing IoT Core "
                             "(default: none, IoT Core publishes loop back)")
    parser.add_argument("--socket", default=None, help="IPC socket path (under 108 bytes)")
    parser.add_argument("--config", default=None,
                        help='JSON merged into the configuration: {"Component": {...}}')
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--run", action="store_true",
                        help="also start the first recipe's lifecycle run script")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


async def _serve(nucleus: EmulatedNucleus, run: bool, deploy: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with nucleus:  # leaving it stops the deployed components
        exports = {**nucleus.ipc_env(), **nucleus.token_exchange.env(nucleus.main_component)}
        for name, value in exports.items():
            print(f"export {name}={shlex.quote(value)}", flush=True)
        if deploy:
            try:
                plan = await loop.run_in_executor(None, nucleus.deploy)
            except DeploymentError as err:  # a failed step's message names its log
                print(f"error: deployment failed: {err}", file=sys.stderr)
                return 1
            for name in plan.names:
                states = nucleus.lifecycle_states(name)
                print(f"deployed {name} {plan.recipe(name).component_version}: "
                      f"{states[-1].state if states else '?'} (log: {nucleus.log_path(name)})",
                      file=sys.stderr, flush=True)
        process = nucleus.launch() if run else None
        if process is not None:
            waiter = loop.run_in_executor(None, process.wait)
            waiter.add_done_callback(lambda _f: stop.set())
        await stop.wait()
        if process is not None and process.poll() is None:
            process.terminate()
            await loop.run_in_executor(None, process.wait)
    return 0


def _components(specs: Sequence[str]) -> dict[str, str | None]:
    wanted: dict[str, str | None] = {}
    for spec in specs:
        name, _, version = spec.partition("=")
        wanted[name.strip()] = version.strip() or None
    return wanted


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if bool(args.recipe) == bool(args.store):
        print("error: give --recipe (serve) or --store with --component (deploy)",
              file=sys.stderr)
        return 2
    if args.store and (not args.component or args.run):
        print("error: --store needs --component and does not take --run", file=sys.stderr)
        return 2
    try:
        overrides = json.loads(args.config) if args.config else None
        options: dict[str, Any] = {"broker": args.broker, "socket_path": args.socket,
                                   "config_overrides": overrides, "region": args.region,
                                   "root_dir": args.root}
        if args.store:
            nucleus = EmulatedNucleus.from_store(args.store, _components(args.component),
                                                 thing_name=args.thing,
                                                 provided=args.provided, **options)
        else:
            nucleus = EmulatedNucleus(recipes=[Recipe.load(p) for p in args.recipe],
                                      thing_name=args.thing, **options)
        return asyncio.run(_serve(nucleus, args.run, deploy=bool(args.store)))
    except (NucleusError, RecipeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
