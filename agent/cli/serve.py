"""``edge-agent serve``: the agent as Greengrass (or a person) runs it.

Settings come from ``--config FILE`` (JSON or YAML), then the component's
Greengrass configuration when a nucleus started the process, then flags.
The transport is Greengrass IPC under a nucleus, direct MQTT with
``--broker``/``--endpoint``, an in-process broker with ``--embedded-broker``,
and otherwise none: the agent serves offline and spools everything.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli.extras import DISTRIBUTION
from agent.cli.options import add_mqtt_tls_arguments, trusted_keys_from_args
from agent.cli.run import add_frame_source_arguments
from agent.core.errors import ConfigError
from agent.device.app.config import AgentConfig, load_config, read_config_file
from agent.device.greengrass.component import GreengrassComponent
from agent.device.inference.sources import SOURCE_KINDS
from agent.device.uplink.ipc import IpcConnection, IpcTransport, ipc_available
from agent.wire.keys import public_key_b64
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig, broker_address
from agent.wire.transport import Transport, TransportError

if TYPE_CHECKING:
    from agent.device.app.service import AgentService
    from agent.tools.brokers.embedded import EmbeddedBroker


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (JSON or YAML)")
    parser.add_argument("--thing", help="thing name (default: $AWS_IOT_THING_NAME)")
    parser.add_argument("--groups", help="comma-separated thing groups")
    parser.add_argument("--model", type=Path, help="model directory (unsigned; development)")
    parser.add_argument("--initial-package", type=Path,
                        help="signed model package, or a folder of them (a model component's "
                             "artifacts): the first model when the store is empty")
    parser.add_argument("--backend", choices=("dlr", "onnx"))
    parser.add_argument("--source", choices=SOURCE_KINDS,
                        help="auto (default): the model's testset.npz when it has one, else "
                             "random inputs; api: no loop, only the local inference API")
    add_frame_source_arguments(parser)
    parser.add_argument("--rate", type=float, help="inferences/s (0: unpaced)")
    parser.add_argument("--api-port", type=int, metavar="PORT",
                        help="the local inference API's HTTP port on 127.0.0.1 (default "
                             "8000; 0: any free port, logged)")
    parser.add_argument("--no-api", action="store_true",
                        help="no local inference API (only the loop runs)")
    parser.add_argument("--state-dir", type=Path, help="spool, sequence and replay state")
    parser.add_argument("--package-dir", type=Path, action="append", default=[],
                        metavar="DIR", help="a folder a stage command's file:// URL may read "
                                            "packages from (repeatable; packageDirs)")
    parser.add_argument("--metrics-interval", type=float)
    parser.add_argument("--heartbeat-interval", type=float)
    parser.add_argument("--board", help="emulate a bundled board (rpi4_64, jetson_nano_r32, ...)")
    parser.add_argument("--trusted-key", action="append", default=[], metavar="ID=VALUE",
                        help="a controller public key the device trusts, by key id: a PEM "
                             "or base64 key file (keys generate's <ID>.pub), or the PEM or "
                             "base64 text itself (repeatable)")
    parser.add_argument("--broker", help="direct MQTT to mqtt://HOST:PORT (plain TCP)")
    add_mqtt_tls_arguments(parser, endpoint_help="direct MQTT with mutual TLS to this "
                                                 "endpoint (AWS IoT Core), with --cert --key --ca")
    parser.add_argument("--embedded-broker", action="store_true",
                        help="start an in-process MQTT broker and connect to it")
    parser.add_argument("--log-level", default="INFO")


def config_from_args(args: argparse.Namespace,
                     greengrass: dict[str, Any] | None = None) -> dict[str, Any]:
    """File settings, then the component's Greengrass configuration, then flags."""
    raw: dict[str, Any] = read_config_file(args.config) if args.config else {}
    raw.update(greengrass or {})
    thing = args.thing or raw.get("thingName") or os.environ.get("AWS_IOT_THING_NAME")
    flags = {
        "thingName": thing, "modelDir": args.model, "initialPackage": args.initial_package,
        "backend": args.backend,
        "source": args.source, "rateHz": args.rate, "stateDir": args.state_dir,
        "sourcePath": args.source_path, "shmName": args.shm_name, "shmSlots": args.shm_slots,
        "sourceLoop": False if args.source_once else None,
        "metricsIntervalSeconds": args.metrics_interval,
        "heartbeatIntervalSeconds": args.heartbeat_interval, "board": args.board,
        "thingGroups": args.groups.split(",") if args.groups else None,
        "packageDirs": [str(p) for p in args.package_dir] or None,
    }
    raw.update({k: str(v) if isinstance(v, Path) else v for k, v in flags.items()
                if v is not None})
    if args.api_port is not None or args.no_api:
        server = dict(raw.get("server") or {})
        if args.api_port is not None:
            server["port"] = args.api_port
        if args.no_api:
            server["enabled"] = False
        raw["server"] = server
    if args.trusted_key:
        # Read here, against this working folder, with the error trustedKeys gives.
        raw["trustedKeys"] = {**raw.get("trustedKeys", {}), **{
            key_id: public_key_b64(key)
            for key_id, key in trusted_keys_from_args(args.trusted_key).items()}}
    client_id = thing or "edge-agent"
    if args.broker:
        host, port = broker_address(args.broker)
        raw["mqtt"] = {"host": host, "port": port, "clientId": client_id}
    elif args.endpoint:
        raw["mqtt"] = {"host": args.endpoint, "clientId": client_id, "certPath": args.cert,
                       "keyPath": args.key, "caPath": args.ca}
    return raw


def choose_transport(config: AgentConfig, ipc: IpcTransport | None = None) -> Transport | None:
    if ipc is not None:
        return ipc
    if config.transport == "ipc":
        raise ConfigError("transport is ipc, but no Greengrass nucleus started this process")
    if config.mqtt is not None:
        return MqttTransport(config=config.mqtt)
    if config.transport == "mqtt":
        raise ConfigError("transport is mqtt, but no broker is configured (--broker/--endpoint)")
    return None


def resolve_board(config: AgentConfig) -> AgentConfig:
    """``board`` (a bundled board to emulate) as the device root of that board's tree: the
    agent itself is only ever given a path. A board wins over ``deviceRoot``."""
    if config.board is None:
        return config
    from agent.tools.boards import board_root

    return config.model_copy(update={"device_root": board_root(config.board), "board": None})


def start_embedded_broker() -> EmbeddedBroker:
    """An in-process broker (amqtt, from the ``tools`` extra), started."""
    if importlib.util.find_spec("amqtt") is None:
        raise ConfigError(f"the embedded broker needs the \"tools\" extra: "
                          f"pip install '{DISTRIBUTION}[tools]'")
    from agent.tools.brokers.embedded import EmbeddedBroker

    broker = EmbeddedBroker()
    broker.start()
    return broker


def serve_main(args: argparse.Namespace) -> int:
    from agent.device.app.service import AgentService

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("amqtt", "transitions"):  # the embedded broker's per-connection chatter
        logging.getLogger(chatty).setLevel(logging.WARNING)
    connection = None
    greengrass = None
    component_config: dict[str, Any] = {}
    if ipc_available(os.environ):
        # Started by a nucleus: the component's configuration is the main source.
        connection = IpcConnection.from_environ(os.environ)
        greengrass = GreengrassComponent(connection)
        try:
            connection.connect(timeout_s=30.0)
            component_config = greengrass.get_configuration()
        except TransportError as err:
            raise ConfigError(f"cannot read the component configuration: {err}") from err
    raw = config_from_args(args, component_config)
    broker = start_embedded_broker() if args.embedded_broker else None
    try:
        if broker is not None:
            raw["mqtt"] = {"host": broker.host, "port": broker.port,
                           "clientId": raw.get("thingName") or "edge-agent"}
        if "mqtt" in raw and isinstance(raw["mqtt"], dict):
            raw["mqtt"] = MqttConfig.model_validate(
                {k: v for k, v in _snake(raw["mqtt"]).items() if v is not None})
        config = resolve_board(load_config(raw))
        if connection is not None and config.transport == "mqtt":
            connection.close()
            connection = greengrass = None
        transport = choose_transport(config, None if connection is None
                                     else IpcTransport(connection))
        _serve(AgentService(config=config, transport=transport, greengrass=greengrass))
    finally:
        if broker is not None:
            broker.stop()
    return 0


def _serve(service: AgentService) -> None:
    """Run ``service`` until SIGTERM or SIGINT, then shut it down."""
    def stop(_signum: int, _frame: object) -> None:
        service.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        service.start()
        service.run()
    finally:
        if service.parts is not None:
            remaining = service.shutdown()
            logging.getLogger("edge_agent").info(
                "stopped; %d message(s) left in the spool for next start", remaining)


def _snake(raw: dict[str, Any]) -> dict[str, Any]:
    names = {"clientId": "client_id", "certPath": "cert_path", "keyPath": "key_path",
             "caPath": "ca_path"}
    return {names.get(k, k): v for k, v in raw.items()}
