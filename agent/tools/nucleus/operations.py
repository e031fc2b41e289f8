"""What an IPC operation handler sees: its stream, and the registry entry describing it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.tools.nucleus.eventstream import Message
from agent.tools.nucleus.rpc import TERMINATE_STREAM, MessageType, json_message, rpc_message

log = logging.getLogger(__name__)

Body = dict[str, Any]
Handler = Callable[["Stream", Body], Awaitable[Body]]

# Every operation in the Greengrass IPC model. One the emulation does not implement is
# answered like a real nucleus answers one it has no handler for: a ServiceError.
GREENGRASS_OPERATIONS = frozenset(f"aws.greengrass#{name}" for name in (
    "AuthorizeClientDeviceAction", "CancelLocalDeployment", "CreateDebugPassword",
    "CreateLocalDeployment", "DeferComponentUpdate", "DeleteThingShadow",
    "GetClientDeviceAuthToken", "GetComponentDetails", "GetConfiguration",
    "GetLocalDeploymentStatus", "GetSecretValue", "GetThingShadow", "ListComponents",
    "ListLocalDeployments", "ListNamedShadowsForThing", "PauseComponent", "PublishToIoTCore",
    "PublishToTopic", "PutComponentMetric", "RestartComponent", "ResumeComponent",
    "SendConfigurationValidityReport", "StopComponent", "SubscribeToCertificateUpdates",
    "SubscribeToComponentUpdates", "SubscribeToConfigurationUpdate",
    "SubscribeToIoTCoreConnectionStatus", "SubscribeToIoTCore", "SubscribeToTopic",
    "SubscribeToValidateConfigurationUpdates", "UpdateConfiguration", "UpdateState",
    "UpdateThingShadow", "ValidateAuthorizationToken", "VerifyClientDeviceIdentity"))


@dataclass(frozen=True)
class Operation:
    name: str  # e.g. aws.greengrass#PublishToIoTCore
    handler: Handler
    streaming: bool = False  # the stream stays open after the response, for events

    @property
    def response_type(self) -> str:
        return f"{self.name}Response"


@dataclass(eq=False)
class Stream:
    """One operation's stream on one client connection. Loop thread only."""

    stream_id: int
    component: str
    operation: str
    send: Callable[[Message], None]
    closed: bool = False
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _after_response: list[Callable[[], None]] = field(default_factory=list)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the stream ends, whichever side ends it."""
        if self.closed:
            callback()
        else:
            self._closers.append(callback)

    def after_response(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the response is on the wire, so events never precede it."""
        self._after_response.append(callback)

    def send_event(self, model_type: str, body: Body) -> None:
        if not self.closed:
            self.send(json_message(MessageType.APPLICATION_MESSAGE, stream_id=self.stream_id,
                                   model_type=model_type, body=body))

    def responded(self) -> None:
        callbacks, self._after_response = self._after_response, []
        for callback in callbacks:
            callback()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        closers, self._closers = self._closers, []
        for closer in closers:
            try:
                closer()
            except Exception:  # one subscriber's cleanup must not stop the others'
                log.exception("closing stream %s of %s", self.stream_id, self.operation)

    def terminate(self) -> None:
        """End the stream from the nucleus side."""
        if not self.closed:
            self.send(rpc_message(MessageType.APPLICATION_MESSAGE, stream_id=self.stream_id,
                                  flags=TERMINATE_STREAM))
            self.close()
