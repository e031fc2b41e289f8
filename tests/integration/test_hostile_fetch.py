"""Hostile package sources against a running agent (real ``edge-agent serve``, real
mosquitto, real staging): a server that promises 1 GiB and trickles it, one that stalls
after the headers, one that never finishes; a stalled stage cancelled by its rollout's
``rollback`` or by a newer ``stage``; ``file://`` URLs outside the package folders.

One agent serves every test, with small limits so each attack is answered in seconds:
what must hold is the typed error naming the limit in the ack, blue serving throughout
(metrics with rising counts while the fetch hangs), nothing left in the staging folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from agent_process import AgentProcess
from cloud import CloudPublisher, CloudSubscriber, signed_command
from hostile_http import GIB, HostileServer, wait_closed
from package_support import Keys, build, make_keys, package_label

from agent.tools.brokers.mosquitto import MosquittoBroker
from agent.wire.commands import Command, RollbackCommand, StageCommand, StatusCommand

THING = "hostile-fetch-1"
WINDOW_S = 2.0  # fetchRateWindowS
DEADLINE_S = 5.0  # fetchDeadlineS
ANY_SHA = "0" * 64
MIB = 1024**2


@dataclass
class Device:
    process: AgentProcess
    cloud: CloudSubscriber
    publisher: CloudPublisher
    keys: Keys
    server: HostileServer
    inbox: Path
    outside: Path
    good: Path
    staging: Path
    seqs: dict[str, int] = field(default_factory=dict)

    def send(self, cls: type[Command], rollout: str, **args: Any) -> str:
        seq = self.seqs[rollout] = self.seqs.get(rollout, 0) + 1
        payload = signed_command(self.keys.signer, cls, thing=THING, rollout_id=rollout,
                                 rollout_seq=seq, **args)
        self.publisher.publish(f"edge/{THING}/commands", payload)
        return str(json.loads(payload)["command_id"])

    def stage(self, rollout: str, url: str, sha256: str = ANY_SHA,
              version: str = "digits-v2") -> str:
        return self.send(StageCommand, rollout, url=url, sha256=sha256, version=version)

    def stage_good(self, rollout: str) -> str:
        return self.stage(rollout, self.good.as_uri(), _sha(self.good), package_label(self.good))

    def ack(self, command_id: str, timeout_s: float = 30) -> Any:
        self.cloud.wait_for(lambda ms: any(m.type == "ack" and m.command_id == command_id
                                           for m in ms), timeout_s, f"ack of {command_id}")
        return next(m for m in self.cloud.of_type("ack") if m.command_id == command_id)

    def models(self) -> dict[str, str]:
        command_id = self.send(StatusCommand, "r-status")
        self.cloud.wait_for(lambda ms: any(m.type == "state" and m.in_reply_to == command_id
                                           for m in ms), 30, "state reply")
        state = next(m for m in self.cloud.of_type("state") if m.in_reply_to == command_id)
        return dict(state.models)

    def mark(self) -> int:
        """Where the messages received from now on start."""
        return len(self.cloud.messages)

    def blue_totals_before(self, start: int, command_id: str) -> list[int]:
        """Blue's inference counts reported from ``start`` until the ack of ``command_id``."""
        messages = list(self.cloud.messages)[start:]
        end = next(i for i, m in enumerate(messages)
                   if m.type == "ack" and m.command_id == command_id)
        return [m.variants["blue"].inferences_total for m in messages[:end]
                if m.type == "metrics" and "blue" in m.variants]

    def rss(self) -> int:
        assert self.process.process is not None
        return int(psutil.Process(self.process.process.pid).memory_info().rss)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def device(shared_broker: MosquittoBroker, built_models: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    root = tmp_path_factory.mktemp("hostile-fetch")
    keys = make_keys(root / "keys")
    inbox, outside = root / "inbox", root / "outside"
    inbox.mkdir()
    good = build(built_models, "digits-v2", keys, inbox, version=2)
    outside.mkdir()
    shutil.copy(good, outside / good.name)  # a valid package: only its place is wrong
    config = root / "agent.yaml"
    config.write_text(json.dumps({
        "packageDirs": [str(inbox)], "goldenTimeoutSeconds": 10,
        "packageLimits": {"maxArchiveBytes": 2 * GIB, "fetchMinBytesPerS": 1024,
                          "fetchRateWindowS": WINDOW_S, "fetchDeadlineS": DEADLINE_S}}))
    cloud = CloudSubscriber(host="127.0.0.1", port=shared_broker.port,
                            topic=f"edge/{THING}/#").start()
    process = AgentProcess(thing=THING, model=built_models / "digits-v1",
                           state_dir=root / "state", broker_port=shared_broker.port,
                           log_path=root / "agent.log", rate=200, metrics_interval=0.2,
                           extra=["--trusted-key", f"ctl-1={keys.signer_public_b64}",
                                  "--config", str(config)]).start()
    publisher = CloudPublisher("127.0.0.1", shared_broker.port)
    server = HostileServer(trickle_bytes=100, trickle_every_s=0.25,
                           steady_bytes_per_s=64 * 1024).start()
    try:
        cloud.wait_for(lambda ms: any(m.type == "metrics" for m in ms), 30, "agent up")
        yield Device(process=process, cloud=cloud, publisher=publisher, keys=keys,
                     server=server, inbox=inbox, outside=outside, good=good,
                     staging=root / "state" / "staging")
        errors = sum(m.variants[v].errors for m in cloud.of_type("metrics") for v in m.variants)
        assert errors == 0, "no inference failed"
        assert cloud.invalid == []
    finally:
        publisher.close()
        server.stop()
        assert process.stop() == 0, process.log()
        cloud.stop()


def _refused_while_serving(device: Device, command_id: str, sent: float,
                           start: int) -> tuple[Any, float]:
    """The ack of ``command_id`` and how long it took; blue counted on meanwhile."""
    ack = device.ack(command_id)
    answered = time.monotonic() - sent
    during = device.blue_totals_before(start, command_id)
    assert len(during) >= 3, "metrics kept coming while the fetch hung"
    assert during == sorted(during) and during[-1] > during[0], "blue kept counting"
    assert ack.outcome == "failed", ack
    assert list(device.staging.iterdir()) == [], "nothing left in the staging folder"
    return ack, answered


@pytest.mark.parametrize("path", ["trickle", "stall"])
def test_a_trickling_or_stalled_server_is_cut_off_at_the_minimum_rate(device: Device,
                                                                     path: str) -> None:
    start, sent = device.mark(), time.monotonic()
    command_id = device.stage(f"r-slow-{path}", device.server.url(f"{path}/digits.tar.gz"))
    ack, answered = _refused_while_serving(device, command_id, sent, start)
    assert "FetchLimitError" in ack.reason, ack.reason
    assert "limit fetch_min_bytes_per_s=1024" in ack.reason, ack.reason
    assert WINDOW_S - 0.5 < answered < WINDOW_S + 8, f"answered after {answered:.1f} s"
    assert wait_closed(device.server), "the agent hung up"


def test_an_endless_body_is_cut_off_at_the_deadline_in_bounded_memory(device: Device) -> None:
    before = device.rss()
    start, sent = device.mark(), time.monotonic()
    command_id = device.stage("r-endless", device.server.url("steady/digits.tar.gz"))
    ack, answered = _refused_while_serving(device, command_id, sent, start)
    assert "FetchLimitError" in ack.reason and "fetch_deadline_s=5" in ack.reason, ack.reason
    assert DEADLINE_S - 0.5 < answered < DEADLINE_S + 8, f"answered after {answered:.1f} s"
    assert device.rss() - before < 64 * MIB, "the body went to disk in chunks, not memory"
    assert wait_closed(device.server)


def _cancelled(device: Device, stage_id: str, by_id: str, by_sent: float) -> Any:
    ack = device.ack(stage_id)
    assert time.monotonic() - by_sent < 3, "cancelled within a second or so"
    assert ack.outcome == "failed" and "FetchCancelledError" in ack.reason, ack.reason
    assert ack.data["code"] == "fetch_cancelled" and ack.data["cancelled_by"] == by_id, ack.data
    assert wait_closed(device.server)
    return ack


def test_a_rollback_of_its_rollout_cancels_a_stalled_stage(device: Device) -> None:
    sent = time.monotonic()
    stage_id = device.stage("r-cancel", device.server.url("steady/digits.tar.gz"))
    time.sleep(0.8)
    by_sent = time.monotonic()
    rollback_id = device.send(RollbackCommand, "r-cancel")
    ack = _cancelled(device, stage_id, rollback_id, by_sent)
    assert ack.data["by_action"] == "rollback"
    assert time.monotonic() - sent < DEADLINE_S, "before the deadline could have ended it"
    rollback = device.ack(rollback_id)
    assert rollback.outcome == "ok" and rollback.data["code"] == "nothing_to_roll_back"
    assert list(device.staging.iterdir()) == []
    assert device.models() == {"blue": "digits-v1"}


@pytest.mark.parametrize("newer", ["another rollout", "a newer rollout_seq"])
def test_a_newer_stage_cancels_a_stalled_one_and_runs_next(device: Device, newer: str) -> None:
    first = "r-old" if newer == "another rollout" else "r-same"
    second = "r-new" if newer == "another rollout" else "r-same"
    stage_id = device.stage(first, device.server.url("steady/digits.tar.gz"))
    time.sleep(0.8)
    by_sent = time.monotonic()
    newer_id = device.stage_good(second)
    ack = _cancelled(device, stage_id, newer_id, by_sent)
    assert ack.data["by_action"] == "stage" and ack.data["by_rollout_id"] == second
    staged = device.ack(newer_id)
    assert staged.outcome == "ok" and staged.data["model"] == "digits-v2", staged.reason
    assert device.models() == {"blue": "digits-v1", "green": "digits-v2"}
    assert device.ack(device.send(RollbackCommand, second)).outcome == "ok"
    assert device.models() == {"blue": "digits-v1"}
    assert list(device.staging.iterdir()) == []


def _local_attacks(device: Device) -> dict[str, tuple[str, str, str]]:
    """Each attack: its URL, the sha256 the command gives, a key part of the refusal."""
    fifo = device.inbox / "fifo.tar.gz"
    if not fifo.exists():
        os.mkfifo(fifo)
    link = device.inbox / "link.tar.gz"
    if not link.is_symlink():
        link.symlink_to(device.outside / device.good.name)
    good_sha = _sha(device.good)
    return {
        "/etc/shadow": ("file:///etc/shadow", ANY_SHA, "resolves to /etc/shadow, outside"),
        "/dev/zero": ("file:///dev/zero", ANY_SHA, "/dev/zero is in /dev"),
        "a FIFO": (fifo.as_uri(), ANY_SHA, "is a FIFO, not a regular file"),
        "/proc/self/mem": ("file:///proc/self/mem", ANY_SHA, "is in /proc"),
        "a link out of the folder": (link.as_uri(), good_sha,
                                     f"resolves to {device.outside}/"),
        "a .. escape": (f"{device.inbox.as_uri()}/../outside/{device.good.name}", good_sha,
                        f"resolves to {device.outside}/"),
    }


@pytest.mark.parametrize("attack", ["/etc/shadow", "/dev/zero", "a FIFO", "/proc/self/mem",
                                    "a link out of the folder", "a .. escape"])
def test_local_sources_outside_the_package_folders_are_refused(device: Device,
                                                               attack: str) -> None:
    url, sha256, expected = _local_attacks(device)[attack]
    sent = time.monotonic()
    rollout = "r-local-" + re.sub(r"[^A-Za-z0-9]+", "-", attack).strip("-")
    ack = device.ack(device.stage(rollout, url, sha256), timeout_s=15)
    assert time.monotonic() - sent < 10, "refused at once (a FIFO or device never blocks)"
    assert ack.outcome == "failed", ack
    assert "PackageSourceNotAllowedError" in ack.reason and expected in ack.reason, ack.reason
    assert list(device.staging.iterdir()) == []
    assert device.process.process is not None and device.process.process.poll() is None
