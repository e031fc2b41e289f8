"""The ``shm`` source: samples a separate producer process writes into a shared-memory ring
(:mod:`agent.wire.shm_ring` has the layout and the protocol).

:meth:`ShmSource.named` is the agent's: it creates the ring under the configured name
(``shmName``), sized from the model's inputs (every input of a multi-input model is in
each sample), logs it, and waits for a producer to attach (:class:`agent.producer.
FrameProducer` is a camera process's API). While no frame is waiting, :meth:`ShmSource.
ready` is false and the loop answers API requests instead; a producer that stops, or
starts later, is no error. :meth:`ShmSource.spawn` is the self-fed demo: a fresh ring and
``agent.device.inference.shm_producer`` replaying the test set into it.

Views on every slot are made once, so a fill is one copy per input into the loop's bound
buffers. Each frame is checked before it runs: a producer that writes garbage into the ring
has its frames refused (:class:`ShmSource` says what is checked), never the agent stopped.
After each fill, :attr:`ShmSource.frame_id` is the frame's sequence number in the ring
(increasing by one per frame) and :attr:`ShmSource.frame_time` the wall-clock time the
producer gave it (by default, when it was published).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agent.core.errors import InputSpecError, RingError, RingFrameError, SourceError
from agent.core.model_layout import TensorSpec
from agent.wire.shm_ring import (
    HEADER_BYTES,
    S_LABEL,
    S_SEQ,
    S_TIME,
    W_BYTES,
    W_CLOSED,
    W_INPUTS,
    W_MAGIC,
    W_OWNER,
    W_READ,
    W_SLOTS,
    W_WRITE,
    RingInput,
    ShmRing,
)

__all__ = ["ShmRing", "ShmSource", "ring_name"]

log = logging.getLogger("edge_agent.sources")
# The header words only the agent writes, once (write_seq is the producer's, read_seq and
# closed the agent's too, but they change).
_FIXED_WORDS = (W_MAGIC, W_SLOTS, W_BYTES, W_INPUTS, W_OWNER)
_WORD_NAMES = {W_MAGIC: "magic", W_SLOTS: "slots", W_BYTES: "sample bytes",
               W_INPUTS: "inputs", W_OWNER: "owner"}


def ring_name(configured: str | None, thing: str) -> str:
    """The ring's name: ``shmName`` as configured, else ``edge-agent-<thing>``."""
    return configured or f"edge-agent-{thing}"


def _check_fit(ring_inputs: Sequence[RingInput], buffers: Sequence[np.ndarray]) -> None:
    wanted = [(spec.dtype, spec.shape) for spec in ring_inputs]
    have = [(buffer.dtype, buffer.shape) for buffer in buffers]
    if len(wanted) != len(have) or any(
            w[0] != h[0] or w[1] != h[1] for w, h in zip(wanted, have, strict=False)):
        def show(items: list[tuple[np.dtype, tuple[int, ...]]]) -> str:
            return ", ".join(f"{dtype}{list(shape)}" for dtype, shape in items)
        raise InputSpecError(f"ring carries {show(wanted)}, the model's inputs are {show(have)}")


class ShmSource:
    """Loop source that copies each published sample into the bound input buffers.

    The producer is another process and may write anything anywhere in the ring, so
    every frame is checked before it is run (:meth:`ready` copies and checks it, :meth:`
    fill` hands it over): the ring's header and input table must be as the agent wrote
    them, the producer's write position must lie between the agent's own read position
    (kept here, never read back from the ring) and one ring of slots ahead, and the slot
    must carry the next sequence number before and after the copy. A frame that fails is
    not run: it is a :class:`~agent.core.errors.RingFrameError`, counted in
    :attr:`rejected` (the latest in :attr:`last_rejection`) and logged at most once per
    ``reject_log_interval_s`` with the count since the last line; the agent then puts its
    header and positions back as it wrote them, so a producer that attaches again (or
    simply writes good frames again) is served at once.
    """

    name = "shm"

    def __init__(self, *, buffers: Sequence[np.ndarray], ring: ShmRing,
                 producer: subprocess.Popen[bytes] | None = None,
                 wait_timeout_s: float = 10.0, reject_log_interval_s: float = 10.0) -> None:
        _check_fit(ring.inputs, buffers)
        self._ring = ring
        self._producer = producer
        # Per slot: its header's word index and a (buffer, view) pair per input, made once.
        self._slots = [(ring.slot_word(i), tuple(zip(buffers, ring.views(i), strict=True)))
                       for i in range(ring.slots)]
        self._count = ring.slots
        self._words = words = ring.words
        self._table = ring.shm.buf[HEADER_BYTES:ring.base]
        self._table_bytes = self._table.tobytes()
        self._header = tuple((w, int(words[w])) for w in _FIXED_WORDS)
        self._pos = int(words[W_READ])  # frames consumed: the agent's own, never read back
        self._staged = False
        self._label = -1
        self._wait_timeout_s = wait_timeout_s
        self._log_interval_s = reject_log_interval_s
        self._unlogged = 0
        self._last_log = -float("inf")
        self.rejected = 0
        self.last_rejection: RingFrameError | None = None
        self.frame_id = 0
        self.frame_time = 0.0

    @property
    def ring(self) -> ShmRing:
        return self._ring

    @classmethod
    def named(cls, *, buffers: Sequence[np.ndarray], specs: Sequence[TensorSpec], name: str,
              slots: int = 8) -> ShmSource:
        """Create ring ``name`` for inputs ``specs`` and wait for an external producer."""
        if slots < 1:
            raise SourceError(f"shmSlots must be at least 1, not {slots}")
        try:
            ring = ShmRing.create([(s.name, s.dtype, s.shape) for s in specs], name=name,
                                  slots=slots)
        except RingError as err:
            raise SourceError(f"source shm: {err}") from err
        try:
            source = cls(buffers=buffers, ring=ring)
        except BaseException:
            ring.close()
            raise
        log.info("source shm: ring %r created (/dev/shm/%s, %d slots of %d bytes: %s); a "
                 "producer attaches with agent.producer.FrameProducer.attach(%r)", ring.name,
                 ring.name, ring.slots, ring.sample_bytes,
                 ", ".join(f"{i.name} {i.dtype}{list(i.shape)}" for i in ring.inputs),
                 ring.name)
        return source

    @classmethod
    def spawn(cls, *, buffer: np.ndarray, testset: Path | None, rate_hz: float = 0.0,
              slots: int = 8) -> ShmSource:
        """Create a ring and start ``agent.device.inference.shm_producer`` feeding it."""
        ring = ShmRing.create([("input", buffer.dtype, buffer.shape)], slots=slots)
        cmd = [sys.executable, "-m", "agent.device.inference.shm_producer", "--shm", ring.name,
               "--rate", str(rate_hz)]
        if testset is not None:
            cmd += ["--testset", str(testset)]
        producer = subprocess.Popen(cmd)
        return cls(buffers=(buffer,), ring=ring, producer=producer)

    def ready(self) -> bool:
        """Whether a checked frame is waiting (copied into the buffers already). With its
        own producer always true: fill() then waits for the producer (and notices it die)."""
        return self._staged or self._producer is not None or self._take()

    def fill(self) -> int:
        if not self._staged:
            self._wait()
        self._staged = False
        return self._label

    def _take(self) -> bool:
        """Copy and check the next frame; True when it is good and staged for fill()."""
        words, pos = self._words, self._pos
        if words[W_READ] != pos or words[W_CLOSED] or not self._intact():
            return self._reject(self._tampered(), skip=False)
        write = words[W_WRITE]
        if write <= pos or write - pos > self._count:
            if write == pos:
                return False
            where = "behind" if write < pos else f"more than {self._count} slots ahead of"
            return self._reject(f"write position {write} is {where} the read position "
                                f"{pos}", skip=False)
        base, pairs = self._slots[pos % self._count]
        seq = words[base + S_SEQ]
        if seq != pos + 1:
            return self._reject(f"slot {pos % self._count} holds frame {seq}, not frame "
                                f"{pos + 1}", skip=True)
        for buffer, view in pairs:
            buffer[...] = view
        if words[base + S_SEQ] != seq or not self._intact():
            return self._reject(f"frame {seq} was rewritten while it was read", skip=True)
        label = words[base + S_LABEL]
        self._label = label if label < (1 << 63) else label - (1 << 64)
        self.frame_time = words[base + S_TIME] / 1e9
        self.frame_id = self._pos = words[W_READ] = pos + 1
        self._staged = True
        return True

    def _intact(self) -> bool:
        words = self._words
        return all(words[w] == v for w, v in self._header) and (
            self._table.tobytes() == self._table_bytes)

    def _tampered(self) -> str:
        words, what = self._words, []
        if words[W_READ] != self._pos:
            what.append(f"read position set to {words[W_READ]} (is {self._pos})")
        if words[W_CLOSED]:
            what.append("marked closed")
        what += [f"{_WORD_NAMES[w]} set to {words[w]} (is {v})"
                 for w, v in self._header if words[w] != v]
        if self._table.tobytes() != self._table_bytes:
            what.append("input table rewritten (names, dtypes, offsets, sizes or shapes)")
        return "ring header: " + "; ".join(what)

    def _reject(self, why: str, *, skip: bool) -> bool:
        """Count and log (rate-limited) a refused frame, then put the ring back as the
        agent keeps it: header, table, closed flag and positions. False, for ready()."""
        error = RingFrameError(f"ring {self._ring.name!r}: {why}: frame not run")
        self.rejected += 1
        self.last_rejection = error
        words = self._words
        if skip:
            self._pos += 1
        for w, v in self._header:
            words[w] = v
        words[W_CLOSED] = 0
        if self._table.tobytes() != self._table_bytes:
            self._table[:] = self._table_bytes
        words[W_READ] = self._pos
        if not self._pos <= words[W_WRITE] <= self._pos + self._count:
            words[W_WRITE] = self._pos
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last_log >= self._log_interval_s:
            log.warning("source shm: %s (%d frame(s) refused since the last such line, %d "
                        "in all)", error, self._unlogged, self.rejected)
            self._unlogged, self._last_log = 0, now
        return False

    def _wait(self) -> None:
        deadline = time.monotonic() + self._wait_timeout_s
        while not self._take():
            if self._producer is not None and self._producer.poll() is not None:
                raise InputSpecError(
                    f"shared-memory producer exited with status {self._producer.returncode}"
                )
            if time.monotonic() > deadline:
                raise InputSpecError("no sample from the shared-memory producer in "
                                     f"{self._wait_timeout_s:.0f} s")
            time.sleep(0.00005)

    def close(self) -> None:
        if self.rejected:
            log.warning("source shm: %d frame(s) refused in all; the last: %s", self.rejected,
                        self.last_rejection)
        self._slots = []
        self._table.release()
        if self._producer is not None and self._producer.poll() is None:
            self._producer.terminate()
            try:
                self._producer.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._producer.kill()
                self._producer.wait()
        self._ring.close()
