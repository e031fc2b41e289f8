"""The broker the agent starts when no broker URL is given: amqtt, in process.

amqtt is asyncio; it gets a thread and an event loop of its own so that the
agent's threads (and awscrt's) never share its loop. It is a development and
emulation broker: no persistence, so queued messages die with the process; use
mosquitto (:mod:`agent.tools.brokers.mosquitto`) when a test needs a broker restart.
Checked with amqtt 0.12.1 and awscrt's MQTT 3.1.1 client: connect, subscribe and
QoS 1 publish round trips work.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

from agent.tools.brokers import BrokerError


class EmbeddedBroker:
    """An amqtt broker on ``host:port`` (port 0: a free one, readable after start)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # Only anonymous auth: amqtt's default plugin set also logs every packet
            # and publishes $SYS topics, which nothing here wants.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }

    def start(self, *, timeout_s: float = 10.0) -> None:
        if self._thread is not None:
            return
        try:
            from amqtt.broker import Broker
        except ImportError as err:
            raise BrokerError("the embedded broker needs amqtt (pip install amqtt)") from err
        loop = asyncio.new_event_loop()
        started: Future[int] = Future()

        async def start_broker() -> None:
            broker = Broker(self._config(), loop=loop)
            await broker.start()
            self._broker = broker
            server = broker._servers["default"].instance  # amqtt has no public accessor
            started.set_result(int(server.sockets[0].getsockname()[1]))

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(start_broker())
            except Exception as err:
                started.set_exception(err)
                loop.close()
                return
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="embedded-broker", daemon=True)
        self._thread.start()
        try:
            self.port = started.result(timeout_s)
        except Exception as err:
            self._thread.join(1.0)
            self._thread = self._loop = None
            raise BrokerError(f"embedded broker did not start on {self.host}:{self.port}: "
                              f"{err}") from err

    def stop(self, *, timeout_s: float = 10.0) -> None:
        loop, thread, broker = self._loop, self._thread, self._broker
        if loop is None or thread is None:
            return
        try:
            if broker is not None:
                asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(timeout_s)
        except Exception as err:
            raise BrokerError(f"embedded broker did not stop cleanly: {err}") from err
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout_s)
            self._loop = self._thread = self._broker = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
