"""Discovery: asking devices to register. Devices register on start, on an ``announce``
command (sent to the spec's groups by :meth:`Discovery.announce`, and to any device
heard only by heartbeat: :meth:`Discovery.ask_to_register`), and their heartbeats
carry their profile and groups."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agent.wire.codec import encode
from agent.wire.commands import AnnounceCommand, Target
from agent.wire.signing import Signer
from agent.wire.topics import Topics, group_commands_topic
from agent.wire.transport import Transport, TransportError

log = logging.getLogger("edge_agent.fleet")
ANNOUNCE_ROLLOUT = "announce"  # the rollout id of discovery commands (not a rollout)
ASK_AGAIN_S = 30.0  # a device heard only by heartbeat is asked to register this often


class Discovery:
    """Signed ``announce`` commands, to groups and to single devices."""

    def __init__(self, *, transport: Transport, signer: Signer, prefix: str,
                 clock: Callable[[], float]) -> None:
        self.transport, self.signer, self.prefix, self.clock = transport, signer, prefix, clock
        self._asked: dict[str, float] = {}  # thing -> when it was last asked to register
        self._announce_seq = 0

    def announce(self, groups: list[str]) -> None:
        """Ask every device of ``groups`` to register now (a signed group command)."""
        for group in groups:
            self._publish(Target(kind="group", name=group),
                          group_commands_topic(self.prefix, group))

    def ask_to_register(self, thing: str) -> None:
        """Ask one device to register, at most once every :data:`ASK_AGAIN_S`."""
        now = self.clock()
        if now - self._asked.get(thing, -ASK_AGAIN_S) < ASK_AGAIN_S:
            return
        self._asked[thing] = now
        self._publish(Target(kind="thing", name=thing),
                      Topics(thing=thing, prefix=self.prefix).commands)

    def _publish(self, target: Target, topic: str) -> None:
        # Devices admit a rollout's commands in rising rollout_seq: the controller's clock
        # in ms keeps discovery's rising across controller restarts too.
        self._announce_seq = max(self._announce_seq + 1, int(time.time() * 1000))
        command = self.signer.sign(AnnounceCommand(
            target=target, rollout_id=ANNOUNCE_ROLLOUT, rollout_seq=self._announce_seq,
            issued_at=int(time.time() * 1000)))
        try:
            self.transport.publish(topic, encode(command))
        except TransportError as err:
            log.warning("announce to %s not sent: %s", topic, err)
