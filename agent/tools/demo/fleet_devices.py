"""One emulated Greengrass device of the demo: an emulated nucleus that deploys the
agent and model components from a component store and runs the agent's lifecycle as
a real process, exactly as a nucleus on a Raspberry Pi or a Jetson would."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.tools.demo.fleet_options import AGENT, DemoDevice
from agent.tools.nucleus import EmulatedNucleus
from agent.wire.mqtt_config import MqttConfig

# Platform components the emulated device stands in for: libdlr comes from the dlr
# wheel in the agent's venv instead of variant.DLR.
PROVIDED = frozenset({"variant.DLR", "aws.greengrass.TokenExchangeService"})


class EmulatedDevice:
    """``start`` deploys and runs the agent; ``stop`` stops it and its nucleus (the
    device goes offline); ``start`` again brings it back with its work folder intact."""

    def __init__(self, device: DemoDevice, *, store: Path, root: Path, socket_dir: Path,
                 broker: MqttConfig, config: Mapping[str, Any]) -> None:
        self.device = device
        self.store, self.root, self.broker = store, root, broker
        self.socket_path = str(socket_dir / f"{device.thing}.sock")
        self.config = dict(config)
        self.nucleus: EmulatedNucleus | None = None
        self.starts = 0
        self.stops: list[str] = []  # how each stop ended: "FINISHED: exited 0 on SIGTERM"

    @property
    def thing(self) -> str:
        return self.device.thing

    def start(self, *, timeout_s: float = 120.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        nucleus = EmulatedNucleus.from_store(
            self.store, components={AGENT: None}, thing_name=self.thing,
            broker=self.broker, root_dir=self.root, socket_path=self.socket_path,
            config_overrides={AGENT: self.config}, provided=PROVIDED)
        self._provision_venv(nucleus)
        self.nucleus = nucleus
        nucleus.start()
        nucleus.deploy(timeout_s=timeout_s)
        self.starts += 1

    @staticmethod
    def _provision_venv(nucleus: EmulatedNucleus) -> None:
        """The agent's install step keeps a venv that already holds this agent version:
        point it at the demo's own environment rather than build eight venvs from PyPI."""
        venv = nucleus.work_dir(AGENT) / "venv"
        venv.parent.mkdir(parents=True, exist_ok=True)
        if not venv.exists() and not venv.is_symlink():
            os.symlink(sys.prefix, venv)

    def stop(self, *, timeout_s: float | None = None) -> None:
        """Stop the agent as a nucleus does (SIGTERM, then SIGKILL after the nucleus's
        5 s unless ``timeout_s`` says otherwise), then the nucleus."""
        nucleus, self.nucleus = self.nucleus, None
        if nucleus is None:
            return
        try:
            nucleus.stop_components(timeout_s=timeout_s)
            last = [s for s in nucleus.lifecycle_states(AGENT)][-1:]
            self.stops += [f"{s.state}: {s.detail}" for s in last]
        finally:
            with contextlib.suppress(Exception):
                nucleus.stop()

    @property
    def online(self) -> bool:
        return self.nucleus is not None

    def states(self) -> list[str]:
        if self.nucleus is None:
            return []
        return [state for state, _source in self.nucleus.component_states(AGENT)]

    def summary(self) -> dict[str, Any]:
        """What its nucleus saw: lifecycle states (nucleus and component side) and, per
        channel, the agent's IPC publishes the nucleus relayed to IoT Core."""
        if self.nucleus is None:
            return {"online": False, "starts": self.starts, "stops": list(self.stops)}
        relayed: dict[str, int] = {}
        for topic, count in self.nucleus.relayed_to_iot_core().items():
            channel = topic.rsplit("/", 1)[-1]
            relayed[channel] = relayed.get(channel, 0) + count
        return {"online": True, "starts": self.starts, "stops": list(self.stops),
                "board": self.device.board,
                "group": self.device.group,
                "states": [f"{state} ({source})" for state, source
                           in self.nucleus.component_states(AGENT)],
                "relayed_via_ipc": relayed}

    def log_path(self) -> Path:
        return self.root / "logs" / f"{AGENT}.log"
