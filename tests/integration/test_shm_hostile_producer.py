"""A hostile producer against the real agent (``edge-agent serve --source shm``, real
mosquitto, libdlr): it writes garbage headers and lies about sizes and sequence numbers
straight into the ring's shared memory. Every bad frame is refused (not run: the agent's
inference count is exactly the number of good frames), the agent repairs the ring, logs
the refusals rate-limited, keeps serving, and serves the good frames that follow."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from agent_process import AgentProcess
from cloud import CloudSubscriber
from waits import wait_for

from agent.core.errors import RingError
from agent.producer import FrameProducer
from agent.tools.brokers.mosquitto import MosquittoBroker
from agent.wire.shm_ring import (
    HEADER_BYTES,
    MAGIC,
    S_SEQ,
    W_BYTES,
    W_CLOSED,
    W_MAGIC,
    W_READ,
    W_WRITE,
    ShmRing,
)

U64 = (1 << 64) - 1
SLOTS = 4
_DIM1 = (HEADER_BYTES // 8) + 22  # input 0's second dimension, in the input table


def _slot_claiming(seq: int) -> Callable[[ShmRing], None]:
    def attack(ring: ShmRing) -> None:
        pos = ring.words[W_WRITE]
        ring.words[ring.slot_word(pos % SLOTS) + S_SEQ] = seq  # then publish it
        ring.words[W_WRITE] = pos + 1
    return attack


def _set(word: int, value: int) -> Callable[[ShmRing], None]:
    return lambda ring: ring.words.__setitem__(word, value)


# Each writes one bad thing with a single 8-byte store (so each is refused exactly once);
# True: it publishes a frame that must not run.
ATTACKS: list[tuple[str, Callable[[ShmRing], None], bool]] = [
    ("bad magic", _set(W_MAGIC, 0x4241_4442_4144), False),
    ("slot length larger than the slot", _set(W_BYTES, 1 << 40), False),
    ("header claiming another tensor shape", _set(_DIM1, 4096), False),
    ("huge frame id", _slot_claiming(U64), True),
    ("negative frame id", _slot_claiming(U64 - 41), True),  # -42 as a signed word
    ("sequence going backwards", _set(W_WRITE, 1), False),
    ("write position past every slot", _set(W_WRITE, 1 << 62), False),
    ("read position rewritten", _set(W_READ, 0), False),
    ("ring marked closed", _set(W_CLOSED, 1), False),
]


def _served(sub: CloudSubscriber) -> int:
    metrics = sub.of_type("metrics")
    return metrics[-1].variants["blue"].inferences_total if metrics else 0


def _intact(ring: ShmRing, header: bytes) -> bool:
    now = ring.shm.buf[:ring.base].tobytes()
    dynamic = {W_WRITE, W_READ}
    return ring.words[W_MAGIC] == MAGIC and all(
        now[i:i + 8] == header[i:i + 8] for i in range(0, len(header), 8)
        if i // 8 not in dynamic)


def test_a_hostile_producer_is_refused_and_the_agent_keeps_serving(
        shared_broker: MosquittoBroker, built_models: Path, tmp_path: Path) -> None:
    thing = f"shm-hostile-{uuid.uuid4().hex[:6]}"
    name = f"edge-agent-hostile-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    sub = CloudSubscriber(host="127.0.0.1", port=shared_broker.port,
                          topic=f"edge/{thing}/#").start()
    agent = AgentProcess(thing=thing, model=built_models / "digits-v1",
                         state_dir=tmp_path / "state", broker_port=shared_broker.port,
                         log_path=tmp_path / "agent.log", metrics_interval=0.2,
                         extra=["--source", "shm", "--shm-name", name,
                                "--shm-slots", str(SLOTS)]).start()
    started = time.monotonic()
    good = 0
    try:
        producer = FrameProducer.attach(name, wait_s=30)
        raw = ShmRing.attach(name)  # the same ring, word by word: what a rogue writes
        header = raw.shm.buf[:raw.base].tobytes()

        def publish_good(count: int) -> None:
            nonlocal good
            for i in range(count):
                producer.write(np.full((1, 64), 0.1 * i, np.float32), label=i % 10)
            good += count
            wait_for(lambda: _served(sub) >= good, 30)
            time.sleep(0.5)  # a frame run that should not have been would show by now
            assert _served(sub) == good, f"{_served(sub) - good} bad frame(s) were run"

        publish_good(5)
        for what, attack, _publishes in ATTACKS:
            attack(raw)
            try:
                wait_for(lambda: _intact(raw, header) and raw.words[W_READ] ==
                         raw.words[W_WRITE], 10)
            except AssertionError:
                raise AssertionError(f"{what}: the agent did not refuse and repair it; "
                                     f"{agent.log()}") from None
            assert agent.process is not None and agent.process.poll() is None, agent.log()
            publish_good(3)  # ... and good frames are served again at once
        elapsed = time.monotonic() - started
        raw.close()
        producer.close()
        assert agent.stop() == 0, agent.log()
    finally:
        sub.stop()
        if agent.process is not None and agent.process.poll() is None:
            agent.kill()
    log = (tmp_path / "agent.log").read_text()
    refusals = [line for line in log.splitlines() if "frame not run" in line]
    print(f"{len(ATTACKS)} attacks, {good} good frames served, in {elapsed:.1f} s; "
          f"{len(refusals)} log line(s) about refusals")
    assert f"source shm: {len(ATTACKS)} frame(s) refused in all" in log, log[-3000:]
    assert 2 <= len(refusals) <= 3, refusals  # the first (rate-limited), the total at stop
    assert "ring header: magic set to" in refusals[0]
    assert "Traceback" not in log
    with pytest.raises(RingError, match=r"no shared-memory ring"):
        ShmRing.attach(name)  # the agent removed its ring on the way out
