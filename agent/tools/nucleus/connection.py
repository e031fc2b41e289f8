"""One component's IPC connection: handshake, then one task per operation stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping

from agent.tools.nucleus.errors import FramingError, IpcServiceError, service_error
from agent.tools.nucleus.eventstream import FrameDecoder, Message, encode
from agent.tools.nucleus.operations import GREENGRASS_OPERATIONS, Operation, Stream
from agent.tools.nucleus.rpc import (
    CONNECTION_ACCEPTED,
    MESSAGE_FLAGS,
    MESSAGE_TYPE,
    OPERATION,
    STREAM_ID,
    TERMINATE_STREAM,
    VERSION,
    VERSION_HEADER,
    MessageType,
    int_header,
    json_message,
    rpc_message,
    str_header,
)

log = logging.getLogger(__name__)

Authenticator = Callable[[str], str | None]  # SVCUID -> component name, None if unknown


class Connection:
    def __init__(self, *, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 authenticate: Authenticator, operations: Mapping[str, Operation]) -> None:
        self._reader = reader
        self._writer = writer
        self._authenticate = authenticate
        self._operations = operations
        self._decoder = FrameDecoder()
        self._streams: dict[int, Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_stream_id = 0
        self.component: str | None = None
        self.closed = False
        self._hangup = False  # stop reading; run() closes once what was written is flushed
        self._refused = False  # connect refused: the client closes, or we do after a grace

    async def run(self) -> None:
        try:
            while self._reading():
                if self._refused:
                    # Leave the close to the client, so it reports the refusal rather than
                    # a dropped socket; close anyway if it lingers.
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._reader.read(65536), 2.0)
                    break
                data = await self._reader.read(65536)
                if not data:
                    break
                try:
                    messages = self._decoder.feed(data)
                except FramingError as err:
                    log.warning("closing IPC connection of %s: %s", self.component, err)
                    self._connection_error(MessageType.PROTOCOL_ERROR, str(err))
                    messages = []
                for message in messages:
                    if not self._reading() or self._refused:
                        break
                    self._on_message(message)
                await self._writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            await self.close()

    def _reading(self) -> bool:
        return not self.closed and not self._hangup

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in list(self._streams.values()):
            stream.close()
        self._streams.clear()
        for task in list(self._tasks):
            task.cancel()
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    def send(self, message: Message) -> None:
        if not self.closed and not self._writer.is_closing():
            self._writer.write(encode(message))

    def _connection_error(self, kind: MessageType, text: str) -> None:
        self.send(json_message(kind, stream_id=0, model_type=None, body={"message": text}))
        self._hangup = True

    def _on_message(self, message: Message) -> None:
        kind = int_header(message, MESSAGE_TYPE)
        flags = int_header(message, MESSAGE_FLAGS)
        stream_id = int_header(message, STREAM_ID)
        log.debug("from %s: type %s flags %s stream %s operation %s", self.component, kind,
                  flags, stream_id, str_header(message, OPERATION))
        if kind is None or flags is None or stream_id is None:
            self._connection_error(MessageType.PROTOCOL_ERROR,
                                   "message lacks :message-type, :message-flags or :stream-id")
        elif self.component is None:
            self._handshake(message, kind, stream_id)
        elif stream_id == 0:
            self._on_protocol_message(message, kind)
        elif kind not in (MessageType.APPLICATION_MESSAGE, MessageType.APPLICATION_ERROR):
            self._connection_error(MessageType.PROTOCOL_ERROR,
                                   f"message type {kind} is not allowed on a stream")
        else:
            self._on_stream_message(message, flags, stream_id)

    def _handshake(self, message: Message, kind: int, stream_id: int) -> None:
        if kind != MessageType.CONNECT or stream_id != 0:
            self._connection_error(MessageType.PROTOCOL_ERROR, "connect expected first")
            return
        component = None
        if str_header(message, VERSION_HEADER) == VERSION:
            try:
                token = json.loads(message.payload or b"{}").get("authToken")
            except (ValueError, AttributeError):
                token = None
            if isinstance(token, str) and token:
                component = self._authenticate(token)
        if component is None:
            # As the real server does: a connect-ack without the accepted flag.
            log.warning("IPC connection refused: unknown auth token or version")
            self.send(rpc_message(MessageType.CONNECT_ACK))
            self._refused = True
            return
        self.component = component
        self.send(rpc_message(MessageType.CONNECT_ACK, flags=CONNECTION_ACCEPTED))

    def _on_protocol_message(self, message: Message, kind: int) -> None:
        if kind == MessageType.PING:
            headers = tuple(h for h in message.headers if not h.name.startswith(":"))
            self.send(rpc_message(MessageType.PING_RESPONSE, headers=headers,
                                  payload=message.payload))
        elif kind != MessageType.PING_RESPONSE:
            self._connection_error(MessageType.PROTOCOL_ERROR,
                                   f"message type {kind} is not allowed on stream 0")

    def _on_stream_message(self, message: Message, flags: int, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            if flags & TERMINATE_STREAM:  # the client closed its operation
                del self._streams[stream_id]
                stream.close()
            return  # no emulated operation takes stream events from the client
        if stream_id <= self._last_stream_id:
            return  # late message on a stream that has already ended
        self._last_stream_id = stream_id
        if flags & TERMINATE_STREAM:
            return  # a request that hangs up at once is never run, as on a real nucleus
        name = str_header(message, OPERATION)
        if name is None:
            self._connection_error(MessageType.PROTOCOL_ERROR,
                                   "first message on a stream lacks the operation header")
            return
        assert self.component is not None
        stream = Stream(stream_id=stream_id, component=self.component, operation=name,
                        send=self.send)
        self._streams[stream_id] = stream
        task = asyncio.get_running_loop().create_task(self._serve(stream, message.payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, stream: Stream, payload: bytes) -> None:
        operation = self._operations.get(stream.operation)
        if operation is None and stream.operation not in GREENGRASS_OPERATIONS:
            # What the real RPC server answers for a name outside the service model: an
            # error without service-model-type, which the SDK turns into StreamClosedError.
            self._finish(stream, json_message(
                MessageType.APPLICATION_ERROR, stream_id=stream.stream_id, model_type=None,
                flags=TERMINATE_STREAM, body={"error": "Unsupported Operation", "message":
                                              f"{stream.operation} is an unsupported operation."}))
            return
        try:
            if operation is None:
                raise service_error(f"Operation {stream.operation} is not supported by "
                                    "the emulated nucleus")
            try:
                request = json.loads(payload or b"{}")
            except ValueError as err:
                raise service_error(f"request is not JSON: {err}") from err
            if not isinstance(request, dict):
                raise service_error("request is not a JSON object")
            response = await operation.handler(stream, request)
        except IpcServiceError as err:
            self._finish(stream, json_message(
                MessageType.APPLICATION_ERROR, stream_id=stream.stream_id, model_type=err.shape,
                body=err.payload(), flags=TERMINATE_STREAM))
            return
        except Exception as err:
            log.exception("%s failed", stream.operation)
            self._finish(stream, json_message(
                MessageType.APPLICATION_ERROR, stream_id=stream.stream_id,
                model_type="aws.greengrass#ServiceError", body={"message": str(err)},
                flags=TERMINATE_STREAM))
            return
        if stream.closed:
            return  # the client hung up while the request was in flight
        reply = json_message(MessageType.APPLICATION_MESSAGE, stream_id=stream.stream_id,
                             model_type=operation.response_type, body=response,
                             flags=0 if operation.streaming else TERMINATE_STREAM)
        if operation.streaming:
            self.send(reply)
            stream.responded()
        else:
            self._finish(stream, reply)

    def _finish(self, stream: Stream, last: Message) -> None:
        if not stream.closed:
            self.send(last)
        self._streams.pop(stream.stream_id, None)
        stream.close()
