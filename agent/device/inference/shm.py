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
buffers. After each fill, :attr:`ShmSource.frame_id` is the frame's sequence number in the
ring (increasing by one per frame) and :attr:`ShmSource.frame_time` the wall-clock time
the producer gave it (by default, when it was published).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agent.core.errors import InputSpecError, RingError, SourceError
from agent.core.model_layout import TensorSpec
from agent.wire.shm_ring import S_LABEL, S_SEQ, S_TIME, W_READ, W_WRITE, RingInput, ShmRing

__all__ = ["ShmRing", "ShmSource", "ring_name"]

log = logging.getLogger("edge_agent.sources")
_TORN_RETRIES = 3


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
    """Loop source that copies each published sample into the bound input buffers."""

    name = "shm"

    def __init__(self, *, buffers: Sequence[np.ndarray], ring: ShmRing,
                 producer: subprocess.Popen[bytes] | None = None,
                 wait_timeout_s: float = 10.0) -> None:
        _check_fit(ring.inputs, buffers)
        self._ring = ring
        self._producer = producer
        # Per slot: its header's word index and a (buffer, view) pair per input, made once.
        self._slots = [(ring.slot_word(i), tuple(zip(buffers, ring.views(i), strict=True)))
                       for i in range(ring.slots)]
        self._count = ring.slots
        self._words = ring.words
        self._wait_timeout_s = wait_timeout_s
        self.torn_reads = 0
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
        """Whether a frame is waiting. With its own producer always true: fill() then
        waits for the producer (and notices it die)."""
        words = self._words
        return self._producer is not None or bool(words[W_WRITE] > words[W_READ])

    def fill(self) -> int:
        words = self._words
        seq = words[W_READ]
        if words[W_WRITE] <= seq:
            self._wait(seq)
        base, pairs = self._slots[seq % self._count]
        for _ in range(_TORN_RETRIES):
            for buffer, view in pairs:
                buffer[...] = view
            if words[base + S_SEQ] == seq + 1:
                break
            self.torn_reads += 1  # the slot was rewritten while we copied it
        label = words[base + S_LABEL]
        self.frame_time = words[base + S_TIME] / 1e9
        self.frame_id = seq + 1
        words[W_READ] = seq + 1
        return label if label < (1 << 63) else label - (1 << 64)

    def _wait(self, seq: int) -> None:
        deadline = time.monotonic() + self._wait_timeout_s
        while self._words[W_WRITE] <= seq:
            if self._producer is not None and self._producer.poll() is not None:
                raise InputSpecError(
                    f"shared-memory producer exited with status {self._producer.returncode}"
                )
            if time.monotonic() > deadline:
                raise InputSpecError("no sample from the shared-memory producer in "
                                     f"{self._wait_timeout_s:.0f} s")
            time.sleep(0.00005)

    def close(self) -> None:
        self._slots = []
        if self._producer is not None and self._producer.poll() is None:
            self._producer.terminate()
            try:
                self._producer.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._producer.kill()
                self._producer.wait()
        self._ring.close()
