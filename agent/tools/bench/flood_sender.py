"""A command-topic flood: hostile payloads published at a steady rate, at little cost.

:func:`hostile_payloads` builds the mix an attacker on the broker can send a device
(garbage, forged, unsigned, untrusted, misaddressed, replayed, deeply nested, oversized);
:class:`FloodSender` publishes them round-robin at ``rate`` messages a second over one raw
MQTT 3.1.1 connection at QoS 0, writing pre-encoded PUBLISH packets in batches, so the
flood costs the machine far less than what it floods (a Python MQTT client would spend
more CPU sending than the agent spends refusing).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Sequence

from agent.wire.codec import encode
from agent.wire.commands import Command, StatusCommand, Target
from agent.wire.keys import generate_keypair
from agent.wire.signing import Signer

_TICK_S = 0.005


def hostile_payloads(*, thing: str, signer: Signer, replayed: Sequence[bytes] = (),
                     variants: int = 32) -> list[bytes]:
    """``variants`` of each kind of hostile command payload for ``thing``, interleaved;
    ``replayed`` are commands the device has already seen, sent again as they were."""
    stranger = Signer(private_key=generate_keypair("stranger").private_key(),
                      key_id="stranger")

    def command(seq: int, to: str = thing) -> Command:
        return StatusCommand(rollout_id="flood", rollout_seq=seq, issued_at=0,
                             target=Target(kind="thing", name=to))

    kinds: list[list[bytes]] = [
        [os.urandom(64) for _ in range(variants)],
        [b"{not json" + str(i).encode() for i in range(variants)],
        [json.dumps({**json.loads(encode(signer.sign(command(i)))),
                     "rollout_seq": i + 1}).encode() for i in range(variants)],  # forged
        [encode(command(i)) for i in range(variants)],  # well formed, unsigned
        [encode(stranger.sign(command(i))) for i in range(variants)],  # untrusted key
        [encode(signer.sign(command(i, to=f"not-{thing}"))) for i in range(variants)],
        [b"[" * 12_000 for _ in range(variants)],  # nested past any depth limit
        [b'{"pad":"' + b"x" * 100_000 + b'"}' for _ in range(variants)],  # oversized
    ]
    if replayed:
        kinds.append([replayed[i % len(replayed)] for i in range(variants)])
    return [kind[i] for i in range(variants) for kind in kinds]


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish_packet(topic: str, payload: bytes) -> bytes:
    name = topic.encode()
    body = struct.pack("!H", len(name)) + name + payload
    return b"\x30" + _remaining_length(len(body)) + body  # PUBLISH, QoS 0


def _connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    body = (b"\x00\x04MQTT\x04\x02\x00\x00"  # MQTT 3.1.1, clean session, no keep-alive
            + struct.pack("!H", len(cid)) + cid)
    return b"\x10" + _remaining_length(len(body)) + body


class FloodSender:
    """Publishes ``payloads`` round-robin on ``topic`` at ``rate`` messages a second."""

    def __init__(self, *, host: str, port: int, topic: str, payloads: Sequence[bytes],
                 rate: float) -> None:
        if not payloads or rate <= 0:
            raise ValueError("a flood needs payloads and a positive rate")
        self._address = (host, port)
        self._packets = [_publish_packet(topic, p) for p in payloads]
        self.rate = rate
        self.sent = 0
        self.elapsed_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)
        self._sock: socket.socket | None = None

    def start(self) -> FloodSender:
        sock = socket.create_connection(self._address, timeout=10)
        sock.sendall(_connect_packet(f"flood-{uuid.uuid4().hex[:8]}"))
        connack = sock.recv(4)
        if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
            sock.close()
            raise ConnectionError(f"the broker refused the flood's connection: {connack!r}")
        self._sock = sock
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._sock is not None
        started = time.perf_counter()
        count = len(self._packets)
        while not self._stop.wait(_TICK_S):
            due = int((time.perf_counter() - started) * self.rate) - self.sent
            if due <= 0:
                continue
            first = self.sent % count
            batch = [self._packets[(first + i) % count] for i in range(due)]
            try:
                self._sock.sendall(b"".join(batch))
            except OSError:
                break
            self.sent += due
        self.elapsed_s = time.perf_counter() - started

    @property
    def achieved_rate(self) -> float:
        """Messages a second actually written (the broker may still drop some)."""
        return self.sent / self.elapsed_s if self.elapsed_s else 0.0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.sendall(b"\xe0\x00")  # DISCONNECT
            self._sock.close()
