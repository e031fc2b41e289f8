"""``python -m agent.emulation.nucleus``: serve an emulated nucleus for a recipe.

    python -m agent.emulation.nucleus --recipe recipes/com.edgeinference.Agent.yaml \\
        --broker 127.0.0.1:1883 --thing demo-1 [--socket /tmp/gg/ipc.socket] [--run]

Prints the ``export`` lines a component needs (socket path, SVCUID, thing name), then
serves until interrupted. ``--run`` also starts the recipe's lifecycle ``run`` script.
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

from agent.emulation.nucleus.errors import NucleusError
from agent.emulation.nucleus.recipe import Recipe
from agent.emulation.nucleus.server import EmulatedNucleus


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent.emulation.nucleus",
                                     description="Serve an emulated Greengrass nucleus.")
    parser.add_argument("--recipe", action="append", required=True,
                        help="component recipe (YAML or JSON); repeat for more components")
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


async def _serve(nucleus: EmulatedNucleus, run: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with nucleus:
        for name, value in nucleus.ipc_env().items():
            print(f"export {name}={shlex.quote(value)}", flush=True)
        process = nucleus.launch() if run else None
        if process is not None:
            waiter = loop.run_in_executor(None, process.wait)
            waiter.add_done_callback(lambda _f: stop.set())
        await stop.wait()
        if process is not None and process.poll() is None:
            process.terminate()
            await loop.run_in_executor(None, process.wait)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        overrides = json.loads(args.config) if args.config else None
        nucleus = EmulatedNucleus(recipes=[Recipe.load(p) for p in args.recipe],
                                  thing_name=args.thing, broker=args.broker,
                                  socket_path=args.socket, config_overrides=overrides,
                                  region=args.region)
        return asyncio.run(_serve(nucleus, args.run))
    except (NucleusError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
