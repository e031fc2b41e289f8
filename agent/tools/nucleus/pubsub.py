"""Local publish/subscribe between components: PublishToTopic and SubscribeToTopic,
authorized by ``aws.greengrass.ipc.pubsub`` policies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.tools.greengrass.access_policy import PUBSUB, AccessPolicy
from agent.tools.nucleus.errors import invalid_arguments
from agent.tools.nucleus.operations import Body, Operation, Stream
from agent.tools.nucleus.policy import authorize
from agent.wire.topics import is_valid_filter, is_valid_topic, topic_matches

_OP = "aws.greengrass#"
FROM_OTHERS = "RECEIVE_MESSAGES_FROM_OTHERS"


@dataclass(frozen=True, eq=False)
class _Subscription:
    topic_filter: str
    receive_mode: str
    stream: Stream


class LocalPubSub:
    """Loop thread only."""

    def __init__(self, policy_for: Callable[[str], AccessPolicy]) -> None:
        self._policy_for = policy_for
        self._subscriptions: list[_Subscription] = []

    def _authorize(self, stream: Stream, request: Body, *, valid: Callable[[str], bool],
                   what: str) -> str:
        """The request's ``topic``, checked with ``valid`` and against the caller's policy."""
        topic = request.get("topic")
        if not isinstance(topic, str) or not valid(topic):
            raise invalid_arguments(f"invalid {what} {topic!r}")
        authorize(self._policy_for(stream.component),
                  service=PUBSUB, operation=stream.operation, resource=topic)
        return topic

    def operations(self) -> list[Operation]:
        async def publish(stream: Stream, request: Body) -> Body:
            topic = self._authorize(stream, request, valid=is_valid_topic, what="topic")
            message = request.get("publishMessage") or {}
            kinds = [k for k in ("jsonMessage", "binaryMessage") if message.get(k) is not None]
            if len(kinds) != 1:
                raise invalid_arguments("publishMessage needs exactly one of jsonMessage "
                                        "and binaryMessage")
            body = {kinds[0]: {"message": message[kinds[0]].get("message"),
                               "context": {"topic": topic}}}
            for sub in list(self._subscriptions):
                if topic_matches(sub.topic_filter, topic) and not (
                        sub.receive_mode == FROM_OTHERS
                        and sub.stream.component == stream.component):
                    sub.stream.send_event(f"{_OP}SubscriptionResponseMessage", body)
            return {}

        async def subscribe(stream: Stream, request: Body) -> Body:
            topic_filter = self._authorize(stream, request, valid=is_valid_filter,
                                           what="topic filter")
            sub = _Subscription(topic_filter, request.get("receiveMode") or "", stream)

            def activate() -> None:
                self._subscriptions.append(sub)
                stream.on_close(lambda: self._subscriptions.remove(sub))

            stream.after_response(activate)
            return {}

        return [Operation(f"{_OP}PublishToTopic", publish),
                Operation(f"{_OP}SubscribeToTopic", subscribe, streaming=True)]
