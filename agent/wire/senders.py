"""Controller side: which device reports are fresh, and which devices went quiet.

A report is stale when its ``seq`` is at or below the last one accepted from
the same thing (a QoS 1 redelivery, or a spooled report overtaken by a newer
one). Silence is measured on the controller's own monotonic clock from the
last fresh report; ``sent_at`` (the device's clock) is never consulted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.wire.messages import UpMessage


@dataclass(frozen=True, kw_only=True)
class SenderState:
    seq: int  # highest seq accepted
    received_at: float  # controller monotonic time of that report
    boot_id: str | None  # from the last report that carried one


class SenderTracker:
    """Per thing: the last accepted ``seq`` and when it arrived."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._senders: dict[str, SenderState] = {}

    def is_stale(self, message: UpMessage) -> bool:
        """Whether ``message`` is at or below the last accepted seq of its thing."""
        with self._lock:
            state = self._senders.get(message.thing)
            return state is not None and message.seq <= state.seq

    def observe(self, message: UpMessage, *, now: float | None = None) -> bool:
        """Record ``message`` if it is fresh; return whether it was (drop it if not)."""
        received_at = self._clock() if now is None else now
        boot_id = getattr(message, "boot_id", None)
        with self._lock:
            state = self._senders.get(message.thing)
            if state is not None and message.seq <= state.seq:
                return False
            self._senders[message.thing] = SenderState(
                seq=message.seq, received_at=received_at,
                boot_id=boot_id if isinstance(boot_id, str) else
                (state.boot_id if state is not None else None))
            return True

    def state(self, thing: str) -> SenderState | None:
        with self._lock:
            return self._senders.get(thing)

    def silent_for(self, thing: str, *, now: float | None = None) -> float | None:
        """Seconds since the last fresh report of ``thing`` (None if never heard)."""
        state = self.state(thing)
        if state is None:
            return None
        return (self._clock() if now is None else now) - state.received_at

    def silent_things(self, *, longer_than_s: float, now: float | None = None) -> list[str]:
        """Things not heard from for more than ``longer_than_s`` seconds, sorted."""
        current = self._clock() if now is None else now
        with self._lock:
            return sorted(thing for thing, state in self._senders.items()
                          if current - state.received_at > longer_than_s)

    def forget(self, thing: str) -> None:
        """Drop a thing (deregistered); its next report is accepted whatever its seq."""
        with self._lock:
            self._senders.pop(thing, None)
