"""Greengrass IPC: one connection to the nucleus, and the transport to AWS IoT Core over it,
used when the agent runs as a Greengrass component (:func:`ipc_available` tells from the
environment).

:class:`IpcConnection` is built on the real ``GreengrassCoreIPCClientV2``, always through
its ``*_async`` calls with a timeout (the blocking ones wait forever). When the nucleus
goes away (restart, deployment) the connection drops: requests fail with
:class:`TransportError` at once, a supervisor thread reconnects with backoff, and every
stream (subscription) is opened again. SDK errors become :class:`TransportError` here,
with the SDK error as ``__cause__``.

:class:`IpcTransport` only moves messages: PublishToIoTCore and SubscribeToIoTCore over a
connection. A publish future completes when the nucleus answered PublishToIoTCore. The
component's own operations over the same connection (configuration, state, update
notices) are :class:`agent.device.greengrass.component.GreengrassComponent`'s.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from agent.wire.transport import MessageHandler, TransportError

log = logging.getLogger(__name__)

SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
TOKEN_ENV = "SVCUID"

# V2 client -> (response future, stream operation): how a stream is opened.
StreamOpener = Callable[[Any], tuple[Future[Any], Any]]


def ipc_available(environ: Mapping[str, str]) -> bool:
    """True when a Greengrass nucleus started this process (its IPC variables are set)."""
    return bool(environ.get(SOCKET_ENV)) and bool(environ.get(TOKEN_ENV))


def _error(what: str, err: BaseException) -> TransportError:
    if isinstance(err, TransportError):
        return err
    if isinstance(err, concurrent.futures.TimeoutError):
        detail = "no answer from the nucleus in time"
    else:
        detail = f"{type(err).__name__}: {getattr(err, 'message', None) or err}"
    translated = TransportError(f"{what}: {detail}")
    translated.__cause__ = err
    return translated


def _settle(future: Future[None], error: BaseException | None = None) -> None:
    try:
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass  # already settled (the deadline and the answer raced)


def guarded(what: str) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """Keep a failing stream callback from reaching the SDK's event thread."""
    def wrap(callback: Callable[[Any], None]) -> Callable[[Any], None]:
        def guarded_callback(event: Any) -> None:
            try:
                callback(event)
            except Exception:
                log.exception("%s failed", what)
        return guarded_callback
    return wrap


@dataclass(eq=False)
class _Stream:
    """A subscription to make again after every reconnect."""

    what: str
    open: StreamOpener
    operation: Any = None


@dataclass(eq=False)
class _Link:
    """One connection's identity, so a late disconnect of an old one is not mistaken."""

    owner: IpcConnection
    client: Any = None
    alive: bool = True

    def on_connect(self) -> None:
        pass

    def on_disconnect(self, reason: Exception | None) -> None:
        self.alive = False
        self.owner._lost(self, reason)

    def on_error(self, error: Exception) -> bool:
        log.warning("IPC connection error: %s", error)
        return True  # close; the supervisor reconnects

    def on_ping(self, headers: Any, payload: bytes) -> None:
        pass


@dataclass(frozen=True)
class _Pending:
    deadline: float
    late: str  # the error when no answer came by the deadline


@dataclass(eq=False, kw_only=True)
class IpcConnection:
    """The process's IPC connection to the nucleus, kept up by a supervisor thread."""

    socket_path: str
    auth_token: str
    request_timeout_s: float = 10.0
    reconnect_max_s: float = 5.0
    _lock: threading.Condition = field(default_factory=threading.Condition, init=False)
    _link: _Link | None = field(default=None, init=False)
    _streams: list[_Stream] = field(default_factory=list, init=False)
    _pending: dict[Future[None], _Pending] = field(default_factory=dict, init=False)
    _dead: list[_Link] = field(default_factory=list, init=False)  # to close off the lock
    _closed: bool = field(default=False, init=False)
    _supervisor: threading.Thread | None = field(default=None, init=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *,
                     request_timeout_s: float = 10.0) -> IpcConnection:
        env = os.environ if environ is None else environ
        if not ipc_available(env):
            raise TransportError(f"{SOCKET_ENV} and {TOKEN_ENV} are not set: "
                                 "not started by a Greengrass nucleus")
        return cls(socket_path=env[SOCKET_ENV], auth_token=env[TOKEN_ENV],
                   request_timeout_s=request_timeout_s)

    def connect(self, timeout_s: float = 10.0) -> None:
        if self.is_connected():
            return
        self._restore(self._open(timeout_s))
        with self._lock:
            if self._supervisor is None:
                self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                                    name="ipc-transport-supervisor")
                self._supervisor.start()

    def is_connected(self) -> bool:
        with self._lock:
            return self._link is not None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            link, self._link = self._link, None
            pending, self._pending = list(self._pending), {}
            self._lock.notify_all()
        for future in pending:
            _settle(future, TransportError("the IPC transport was closed"))
        if self._supervisor is not None:
            self._supervisor.join(timeout=self.request_timeout_s)
        if link is not None:
            self._shut(link)

    # ---- requests and streams ------------------------------------------------------------

    def call(self, what: str, request: Callable[[Any], Future[Any]]) -> Any:
        """Make ``request`` on the V2 client and wait (up to the request timeout) for the
        answer; a TransportError naming ``what`` if there is none."""
        try:
            return request(self._client()).result(self.request_timeout_s)
        except Exception as err:
            raise _error(what, err) from err

    def send(self, what: str, request: Callable[[Any], Future[Any]], *,
             late: str) -> Future[None]:
        """Make ``request`` without waiting: a future settled by the nucleus's answer, or
        failed with TransportError(``late``) once the request timeout has passed."""
        result: Future[None] = Future()
        try:
            answer = request(self._client())
        except Exception as err:
            _settle(result, _error(what, err))
            return result
        with self._lock:
            self._pending[result] = _Pending(time.monotonic() + self.request_timeout_s, late)

        def answered(done: Future[Any]) -> None:
            with self._lock:
                self._pending.pop(result, None)
            error = done.exception()
            _settle(result, None if error is None else _error(what, error))

        answer.add_done_callback(answered)
        return result

    def add_stream(self, what: str, opener: StreamOpener) -> None:
        """Open a stream now if connected (raising TransportError if refused), and again
        after every reconnect; while disconnected, the first connect opens it."""
        stream = _Stream(what, opener)
        with self._lock:
            self._streams.append(stream)
            link = self._link
        if link is None:
            return
        try:
            self._establish(link.client, stream)
        except TransportError:
            if not link.alive:
                return  # the connection dropped meanwhile; the reconnect makes it
            with self._lock:
                self._streams.remove(stream)
            raise

    # ---- internals -----------------------------------------------------------------------

    def _client(self) -> Any:
        with self._lock:
            if self._link is None:
                raise TransportError("not connected to the Greengrass nucleus")
            return self._link.client

    def _establish(self, client: Any, stream: _Stream) -> None:
        try:
            response, stream.operation = stream.open(client)
            response.result(self.request_timeout_s)
        except Exception as err:
            raise _error(stream.what, err) from err

    def _open(self, timeout_s: float) -> _Link:
        from awscrt.io import (
            ClientBootstrap,
            DefaultHostResolver,
            EventLoopGroup,
            SocketDomain,
            SocketOptions,
        )
        from awsiot.eventstreamrpc import AccessDeniedError, Connection, MessageAmendment
        from awsiot.greengrasscoreipc.client import GreengrassCoreIPCClient
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

        if not os.path.exists(self.socket_path):
            raise TransportError(f"no Greengrass IPC socket at {self.socket_path}")
        elg = EventLoopGroup(num_threads=1)
        options = SocketOptions()
        options.domain = SocketDomain.Local
        connection = Connection(
            host_name=self.socket_path, port=0,
            bootstrap=ClientBootstrap(elg, DefaultHostResolver(elg)), socket_options=options,
            connect_message_amender=MessageAmendment.create_static_authtoken_amender(
                self.auth_token))
        link = _Link(self)
        try:
            connection.connect(link).result(timeout_s)
        except AccessDeniedError as err:
            raise TransportError("the Greengrass nucleus refused the IPC connection: "
                                 "it does not accept this SVCUID") from err
        except Exception as err:
            connection.close()
            raise _error(f"connect to the nucleus at {self.socket_path}", err) from err
        # One event thread: messages reach handlers in the order the nucleus sent them.
        events = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                       thread_name_prefix="ipc-events")
        link.client = GreengrassCoreIPCClientV2(client=GreengrassCoreIPCClient(connection),
                                                executor=events)
        return link

    def _shut(self, link: _Link) -> None:
        try:
            link.client.close(executor_wait=False)
        except Exception as err:  # closing a connection that is already gone
            log.debug("closing the IPC client: %s", err)

    def _lost(self, link: _Link, reason: Exception | None) -> None:
        with self._lock:
            self._dead.append(link)
            if self._link is not link:
                return
            self._link = None
            self._lock.notify_all()
        log.warning("lost the IPC connection to the nucleus: %s", reason)

    def _supervise(self) -> None:
        delay = 0.1
        retry_at = 0.0
        while True:
            with self._lock:
                self._lock.wait(0.1)
                if self._closed:
                    return
                now = time.monotonic()
                expired = [(f, p.late) for f, p in self._pending.items() if p.deadline <= now]
                for future, _late in expired:
                    del self._pending[future]
                down = self._link is None
                dead, self._dead = self._dead, []
            for old in dead:
                self._shut(old)
            for future, late in expired:
                _settle(future, TransportError(late))
            if down and time.monotonic() >= retry_at:
                try:
                    link = self._open(self.request_timeout_s)
                except TransportError as err:
                    log.debug("reconnecting to the nucleus: %s", err)
                    retry_at = time.monotonic() + delay
                    delay = min(delay * 2, self.reconnect_max_s)
                    continue
                self._restore(link)
                delay = 0.1

    def _restore(self, link: _Link) -> None:
        with self._lock:
            if self._closed:
                self._shut(link)
                return
            streams = list(self._streams)
        for stream in streams:
            try:
                self._establish(link.client, stream)
            except TransportError as err:
                log.warning("after reconnecting, could not %s", err)
        with self._lock:
            if not link.alive:
                return  # dropped again while restoring; the supervisor tries once more
            self._link = link
        log.info("connected to the nucleus; %d subscriptions made", len(streams))


class IpcTransport:
    """AWS IoT Core through the nucleus: PublishToIoTCore and SubscribeToIoTCore.

    Either over a connection shared with the component's own operations
    (``IpcTransport(connection)``), or over one of its own (``socket_path`` and
    ``auth_token``, or :meth:`from_environ`). Closing the transport closes the connection.
    """

    name = "ipc"

    def __init__(self, connection: IpcConnection | None = None, *,
                 socket_path: str | None = None, auth_token: str | None = None,
                 request_timeout_s: float = 10.0, reconnect_max_s: float = 5.0) -> None:
        if connection is None:
            if socket_path is None or auth_token is None:
                raise TypeError("IpcTransport needs a connection, or socket_path and "
                                "auth_token")
            connection = IpcConnection(socket_path=socket_path, auth_token=auth_token,
                                       request_timeout_s=request_timeout_s,
                                       reconnect_max_s=reconnect_max_s)
        self.connection = connection

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *,
                     request_timeout_s: float = 10.0) -> IpcTransport:
        return cls(IpcConnection.from_environ(environ, request_timeout_s=request_timeout_s))

    def connect(self, timeout_s: float = 10.0) -> None:
        self.connection.connect(timeout_s)

    def is_connected(self) -> bool:
        return self.connection.is_connected()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> Future[None]:
        return self.connection.send(
            f"publish to {topic}", lambda c: c.publish_to_iot_core_async(
                topic_name=topic, qos=str(min(qos, 1)), payload=payload),
            late="publish: no answer from the nucleus in time")

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        @guarded(f"message handler for {topic_filter}")
        def deliver(event: Any) -> None:
            message = event.message
            handler(message.topic_name, bytes(message.payload or b""))

        self.connection.add_stream(f"subscribe to {topic_filter}", lambda c: (
            c.subscribe_to_iot_core_async(topic_name=topic_filter, qos=str(min(qos, 1)),
                                          on_stream_event=deliver)))

    def close(self) -> None:
        self.connection.close()
