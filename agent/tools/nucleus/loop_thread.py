"""An asyncio event loop on a background thread, for callers that are not async."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, *, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.loop.close()


def call_in_loop(loop: asyncio.AbstractEventLoop | None, fn: Callable[[], T],
                 timeout_s: float = 10.0) -> T:
    """Run ``fn`` on ``loop``'s thread and return its result; directly when already
    there, or when there is no loop (nothing else then touches the state)."""
    if loop is None:
        return fn()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return fn()
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as err:
            future.set_exception(err)

    loop.call_soon_threadsafe(run)
    return future.result(timeout_s)
