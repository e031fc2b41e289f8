"""The agent's state directory made read-only (``chmod -R a-w``), while the real agent runs
and before it starts: it keeps serving, reports a typed error, never crash-loops, and
picks up again once write access returns.

Root ignores permission bits; when the tests run as root the agent is started without
the capabilities that let it (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``,
``CAP_FOWNER``, dropped from its bounding set before exec), so ``chmod`` binds it as it
binds any other user.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_process import AgentProcess
from cloud import CloudSubscriber
from waits import wait_for

from agent.tools.brokers.mosquitto import MosquittoBroker

_PR_CAPBSET_DROP = 24
_DAC_CAPS = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def _drop_dac_caps() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _DAC_CAPS:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")


def _permission_bits_bind(tmp_path: Path) -> str | None:
    """Why ``chmod`` cannot be made to bind the agent here (None: it can)."""
    locked = tmp_path / "locked"
    locked.write_text("")
    locked.chmod(0o444)
    try:
        probe = subprocess.run(["sh", "-c", f"echo x > {locked}"], capture_output=True,
                               preexec_fn=_drop_dac_caps if os.geteuid() == 0 else None)
    except (OSError, subprocess.SubprocessError) as err:
        return f"cannot drop CAP_DAC_OVERRIDE to run the agent as root bound by chmod: {err}"
    finally:
        locked.unlink()
    if probe.returncode == 0:
        return ("a file made read-only with chmod can still be written here (uid "
                f"{os.geteuid()}): no way to make the state directory read-only for the agent")
    return None


class BoundAgent(AgentProcess):
    """The real agent, subject to file permission bits even when the tests run as root."""

    def start(self) -> BoundAgent:
        env = {k: v for k, v in os.environ.items()
               if k not in ("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "SVCUID")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=_drop_dac_caps if os.geteuid() == 0 else None)
        return self


@pytest.fixture()
def state(tmp_path: Path) -> Iterator[Path]:
    why = _permission_bits_bind(tmp_path)
    if why:
        pytest.skip(why)
    path = tmp_path / "state"
    path.mkdir()
    yield path
    subprocess.run(["chmod", "-R", "u+w", str(path)], check=False)


def _read_only(path: Path, on: bool) -> None:
    subprocess.run(["chmod", "-R", "a-w" if on else "u+w", str(path)], check=True)
    assert os.access(path, os.W_OK) == (not on) or os.geteuid() == 0


def _alive(agent: AgentProcess) -> bool:
    return agent.process is not None and agent.process.poll() is None


def _served(sub: CloudSubscriber) -> int:
    metrics = sub.of_type("metrics")
    return metrics[-1].variants["blue"].inferences_total if metrics else 0


def test_a_state_dir_made_read_only_while_serving_is_survived_and_reported(
        shared_broker: MosquittoBroker, built_models: Path, tmp_path: Path,
        state: Path) -> None:
    thing = f"ro-run-{uuid.uuid4().hex[:6]}"
    sub = CloudSubscriber(host="127.0.0.1", port=shared_broker.port,
                          topic=f"edge/{thing}/#").start()
    # Metrics every 2 ms use up the sequence's reserved block (1,000 numbers) in seconds:
    # the next reservation is a write into the read-only folder.
    config = tmp_path / "agent.yaml"
    config.write_text("drainRatePerSecond: 0\nshutdownFlushSeconds: 2\n")
    agent = BoundAgent(thing=thing, model=built_models / "digits-v1", state_dir=state,
                       broker_port=shared_broker.port, log_path=tmp_path / "agent.log",
                       metrics_interval=0.002, extra=["--config", str(config)]).start()
    try:
        wait_for(lambda: _served(sub) > 0, 30)
        _read_only(state, True)
        went_read_only = time.monotonic()
        wait_for(lambda: "StateFileError" in agent.log(), 30)
        before = _served(sub)
        time.sleep(1.0)
        assert _alive(agent), agent.log()
        assert "cannot record the sequence: Permission denied" in agent.log()
        _read_only(state, False)
        events = sub.wait_for(lambda ms: any(
            m.type == "event" and m.kind == "agent_error" and
            m.data.get("code") == "state_unwritable" for m in ms), 30, "the error event")
        event = next(m for m in events if m.type == "event" and m.kind == "agent_error"
                     and m.data.get("code") == "state_unwritable")
        wait_for(lambda: _served(sub) > before + 200, 30)  # it never stopped serving
        read_only_s = time.monotonic() - went_read_only
        assert agent.stop() == 0, agent.log()
    finally:
        sub.stop()
        if _alive(agent):
            agent.kill()
    log = (tmp_path / "agent.log").read_text()
    print(f"read-only for {read_only_s:.1f} s: {event.data['count']} message(s) not stored, "
          f"reported as: {event.detail}")
    assert event.data["count"] > 0 and "could not be stored" in event.detail
    assert "cannot record the sequence" in event.detail
    assert log.count("StateFileError") == 1, "logged once a minute, not once a message"
    assert "Traceback" not in log


def test_a_state_dir_read_only_at_start_is_waited_out_not_crashed_on(
        shared_broker: MosquittoBroker, built_models: Path, tmp_path: Path,
        state: Path) -> None:
    thing = f"ro-start-{uuid.uuid4().hex[:6]}"
    first = BoundAgent(thing=thing, model=built_models / "digits-v1", state_dir=state,
                       broker_port=None, log_path=tmp_path / "first.log").start()
    wait_for(lambda: "started" in first.log(), 30)
    assert first.stop() == 0, first.log()  # a state directory as a run leaves it
    _read_only(state, True)
    sub = CloudSubscriber(host="127.0.0.1", port=shared_broker.port,
                          topic=f"edge/{thing}/#").start()
    agent = BoundAgent(thing=thing, model=built_models / "digits-v1", state_dir=state,
                       broker_port=shared_broker.port, log_path=tmp_path / "agent.log").start()
    try:
        wait_for(lambda: "waiting for write access" in agent.log(), 30)
        time.sleep(3.0)
        assert _alive(agent), "exited: a supervisor would restart it in a loop"
        log = agent.log()
        assert "StateFileError: state directory" in log and "is not writable" in log
        assert log.count("waiting for write access") == 1  # once a minute
        assert sub.of_type("register") == [], "nothing is built on a read-only state"
        _read_only(state, False)
        sub.wait_for(lambda ms: any(m.type == "metrics" for m in ms), 30, "metrics")
        assert "is writable again" in agent.log()
        assert agent.stop() == 0, agent.log()
    finally:
        sub.stop()
        if _alive(agent):
            agent.kill()
    assert "Traceback" not in (tmp_path / "agent.log").read_text()


def test_a_stop_while_waiting_for_write_access_exits_cleanly(
        built_models: Path, tmp_path: Path, state: Path) -> None:
    _read_only(state, True)
    agent = BoundAgent(thing="ro-stop-1", model=built_models / "digits-v1", state_dir=state,
                       broker_port=None, log_path=tmp_path / "agent.log").start()
    wait_for(lambda: "waiting for write access" in agent.log(), 30)
    started = time.monotonic()
    assert agent.stop() == 0, agent.log()
    assert time.monotonic() - started < 10
    assert "Traceback" not in agent.log()
