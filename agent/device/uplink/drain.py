"""The thread that moves spooled messages to a transport, oldest first.

Delivery is at-least-once and in order: an entry is deleted from the spool only
after the transport confirmed it (PUBACK), and any failure (a refused or timed-out
publish, a lost connection) sends everything again from the oldest unconfirmed
entry, after a backoff. Receivers therefore see duplicates, never gaps, and must
de-duplicate by message id. Up to ``max_in_flight`` publishes are outstanding at
once, so a backlog drains at window / round-trip rather than one message per
round trip; MQTT keeps them in order on the connection, and a publish that fails
at once stops the window before anything after it is sent. The rate limit
(AWS IoT Core allows 100 publishes per second per connection) paces every send,
retries included.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, replace

from agent.core.errors import AgentError
from agent.device.uplink.spool import Spool, SpoolEntry
from agent.wire.transport import Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrainStats:
    sent: int = 0  # entries confirmed and deleted from the spool
    retries: int = 0  # entries sent again after a failure
    failures: int = 0  # failed or timed-out publishes that triggered a retry
    last_error: str | None = None
    in_flight: int = 0


@dataclass
class _InFlight:
    entry: SpoolEntry
    future: Future[None]
    deadline: float


class SpoolDrainer:
    """Drains ``spool`` through ``transport`` on its own thread (``start``/``stop``)."""

    def __init__(
        self,
        *,
        spool: Spool,
        transport: Transport,
        rate_limit_per_s: float = 100.0,
        max_in_flight: int = 16,
        publish_timeout_s: float = 10.0,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 30.0,
        idle_poll_s: float = 0.05,
    ) -> None:
        if rate_limit_per_s < 0 or max_in_flight < 1 or publish_timeout_s <= 0:
            raise ValueError("rate_limit_per_s >= 0, max_in_flight >= 1, publish_timeout_s > 0")
        self.spool = spool
        self.transport = transport
        self.rate_limit_per_s = rate_limit_per_s  # 0: unlimited
        self.max_in_flight = max_in_flight
        self.publish_timeout_s = publish_timeout_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.idle_poll_s = idle_poll_s
        self._stats = DrainStats()
        self._stats_lock = threading.Lock()
        self._progress = threading.Condition()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight: deque[_InFlight] = deque()
        self._next_send = 0.0

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="spool-drainer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread; unconfirmed entries stay in the spool for the next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def flush(self, timeout_s: float) -> int:
        """Wait (at most ``timeout_s``) until the spool is empty; for SIGTERM.
        Returns how many entries remain, which stay durable for the next start."""
        deadline = time.monotonic() + timeout_s
        with self._progress:
            while self.spool.count() and self._thread is not None and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._progress.wait(min(left, 0.1))
        return self.spool.count()

    def stats(self) -> DrainStats:
        with self._stats_lock:
            return replace(self._stats, in_flight=len(self._in_flight))

    def _count(self, *, sent: int = 0, retries: int = 0, error: str | None = None) -> None:
        with self._stats_lock:
            self._stats = replace(
                self._stats, sent=self._stats.sent + sent, retries=self._stats.retries + retries,
                failures=self._stats.failures + (error is not None),
                last_error=error if error is not None else self._stats.last_error)

    def _run(self) -> None:
        self._in_flight.clear()  # left by an earlier stop(): resent from the spool
        backoff = self.backoff_min_s
        last_issued = 0  # id of the newest entry in flight; 0 restarts from the oldest
        highest_ever = 0  # ids at or below this were sent before: sending again is a retry
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if self.transport.is_connected():
                    last_issued, highest_ever = self._fill_window(last_issued, highest_ever)
                confirmed, failure = self._harvest()
            except AgentError as err:  # the spool failed (e.g. disk full on ack)
                confirmed, failure = 0, str(err)
            except Exception as err:  # a bug must not end delivery for good
                log.exception("spool drain: unexpected error")
                confirmed, failure = 0, f"unexpected {type(err).__name__}: {err}"
            if confirmed:
                backoff = self.backoff_min_s
            if failure is not None:
                self._count(error=failure)
                self._in_flight.clear()
                last_issued = 0
                if self.transport.is_connected():  # refused or timed out: back off
                    log.warning("spool drain: %s; retrying in %.1f s", failure, backoff)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, self.backoff_max_s)
                else:  # the transport's reconnect paces the retry
                    log.info("spool drain: %s; resending after reconnect", failure)
                continue
            if self._in_flight:
                head_left = self._in_flight[0].deadline - time.monotonic()
                self._wake.wait(max(0.0, min(head_left, self.idle_poll_s)))
            elif self.transport.is_connected():
                self.spool.wait_for_entries(self.idle_poll_s)
            else:
                self._wake.wait(self.idle_poll_s)

    def _fill_window(self, last_issued: int, highest_ever: int) -> tuple[int, int]:
        if not self._in_flight:
            last_issued = 0  # start from the oldest entry left in the spool
        room = self.max_in_flight - len(self._in_flight)
        if room <= 0:
            return last_issued, highest_ever
        retries = 0
        for entry in self.spool.peek(room, after_id=last_issued):
            if not self._pace():
                break
            try:
                future = self.transport.publish(entry.topic, entry.payload, entry.qos)
            except AgentError as err:
                future = Future()
                future.set_exception(err)
            future.add_done_callback(lambda _f: self._wake.set())
            self._in_flight.append(
                _InFlight(entry, future, time.monotonic() + self.publish_timeout_s))
            retries += entry.id <= highest_ever
            last_issued, highest_ever = entry.id, max(highest_ever, entry.id)
            if future.done() and future.exception() is not None:
                break  # e.g. not connected: sending more now could overtake this one
        if retries:
            self._count(retries=retries)
        return last_issued, highest_ever

    def _harvest(self) -> tuple[int, str | None]:
        """Ack the confirmed prefix of the window; how many, and the first failure.

        A failure anywhere in the window fails all of it: the entries after the failed
        one may already be on the wire, and sending them again after the failed one is
        what keeps first arrivals in order.
        """
        confirmed: list[int] = []
        while self._in_flight and self._in_flight[0].future.done() \
                and self._in_flight[0].future.exception() is None:
            confirmed.append(self._in_flight.popleft().entry.id)
        if confirmed:
            self.spool.ack_many(confirmed)
            self._count(sent=len(confirmed))
            with self._progress:
                self._progress.notify_all()
        if not self._in_flight:
            return len(confirmed), None
        head = self._in_flight[0]
        if not head.future.done() and time.monotonic() >= head.deadline:
            return len(confirmed), (f"publish of entry {head.entry.id} unconfirmed after "
                                    f"{self.publish_timeout_s} s")
        for sent in self._in_flight:
            error = sent.future.exception() if sent.future.done() else None
            if error is not None:
                return len(confirmed), f"publish of entry {sent.entry.id} failed: {error}"
        return len(confirmed), None

    def _pace(self) -> bool:
        """Sleep until the rate limit allows one more send; False if stopping."""
        if not self.rate_limit_per_s:
            return not self._stopping.is_set()
        interval = 1.0 / self.rate_limit_per_s
        now = time.monotonic()
        # After an idle spell, allow a burst of a tenth of a second's allowance.
        burst = max(1.0, self.rate_limit_per_s / 10)
        self._next_send = max(self._next_send, now - interval * (burst - 1))
        if self._next_send > now and self._stopping.wait(self._next_send - now):
            return False
        self._next_send += interval
        return not self._stopping.is_set()
