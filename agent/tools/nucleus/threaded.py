"""The emulated nucleus from threaded code: it serves on an asyncio loop of its own, on a
background thread. A mixin of :class:`~agent.tools.nucleus.server.EmulatedNucleus`,
kept apart for size::

    with EmulatedNucleus(recipes=[recipe], thing_name="demo-1") as nucleus:
        env = nucleus.component_env()   # socket path, SVCUID, thing name for the component
        nucleus.restart()               # connections drop; socket path and SVCUIDs stay

``start()``/``stop()`` may be repeated to emulate a nucleus restart. Leaving the block
(or :meth:`~ThreadedNucleus.close`) stops the components, then the nucleus, and removes
the root folder the nucleus made for itself.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from typing_extensions import Self

from agent.tools.nucleus.errors import NucleusError
from agent.tools.nucleus.loop_thread import LoopThread


class ThreadedNucleus:
    """Serving on a background thread (the methods below are EmulatedNucleus's)."""

    root_dir: Path
    _owns_root: bool  # the nucleus made root_dir, in /tmp
    _loop: asyncio.AbstractEventLoop | None
    _runner: LoopThread | None  # when started from threaded code

    if TYPE_CHECKING:  # provided by EmulatedNucleus (stop_components by ComponentHosting)
        async def aopen(self, *, broker_wait_s: float = 5.0) -> None: ...

        async def aclose(self) -> None: ...

        def stop_components(self, *, timeout_s: float | None = None) -> None: ...

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Serve on a background thread until :meth:`stop`."""
        if self._runner is not None:
            raise NucleusError("the nucleus is already running")
        runner = LoopThread(name="emulated-nucleus")
        try:
            runner.run(self.aopen(), timeout_s)
        except BaseException:
            runner.stop()
            raise
        self._runner = runner

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop the deployed components, then serving: every component connection drops,
        as when a nucleus stops."""
        self.stop_components()
        runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            runner.run(self.aclose(), timeout_s)
        finally:
            runner.stop(timeout_s)
            self._loop = None

    def restart(self) -> None:
        """Stop, then start again: as a nucleus restart, the connections drop and the
        socket path and the SVCUIDs stay the same."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the components and the nucleus and remove the root folder it made."""
        self.stop()
        self.remove_root()

    def remove_root(self) -> None:
        """Remove the temporary root folder the nucleus made for itself, if it made one."""
        if self._owns_root and self._loop is None:
            shutil.rmtree(self.root_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
