"""A real mosquitto on a free loopback port, for tests and the demo.

Persistence is on, so queued QoS 1 messages and persistent sessions
(``clean_session=False``) survive :meth:`MosquittoBroker.restart`. mosquitto writes
its database on a clean shutdown (SIGTERM) and every ``autosave_interval`` seconds;
a :meth:`MosquittoBroker.kill` (SIGKILL) loses what arrived since the last autosave,
exactly like a broker host losing power.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from agent.tools.brokers import BrokerError, BrokerMissingError

_SEARCH_PATH = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")


def find_mosquitto() -> Path | None:
    """The mosquitto executable, or None when it is not installed."""
    found = shutil.which("mosquitto") or shutil.which(
        "mosquitto", path=os.pathsep.join(_SEARCH_PATH))
    return Path(found) if found else None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, below the kernel's ephemeral range.

    Outside that range no outgoing connection can be handed the port as its source
    while the broker is stopped, and a client retrying against a stopped broker
    cannot "connect" to itself (TCP simultaneous open), which would keep the broker
    from binding its port again on restart.
    """
    low = _ephemeral_low()
    for _ in range(50):
        port = random.randrange(max(1024, low - 20000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        found: int = sock.getsockname()[1]
        return found


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; macOS starts at 49152


@dataclass(frozen=True)
class MosquittoTls:
    """A TLS listener; with ``require_certificate`` clients must present a certificate
    signed by ``cafile`` (mutual TLS, as AWS IoT Core requires)."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = True


class MosquittoBroker:
    """One mosquitto process on ``host:port``; start, stop and restart keep the port."""

    def __init__(
        self,
        *,
        workdir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        tls: MosquittoTls | None = None,
        persistence: bool = True,
        autosave_interval_s: int = 1,
        executable: Path | None = None,
    ) -> None:
        found = executable or find_mosquitto()
        if found is None:
            raise BrokerMissingError(
                "mosquitto is not installed (apt-get install mosquitto, brew install mosquitto)")
        self.executable = found
        self.workdir = workdir
        self.host = host
        self.port = port or free_port(host)
        self.tls = tls
        self.persistence = persistence
        self.autosave_interval_s = autosave_interval_s
        self._process: subprocess.Popen[bytes] | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.config_path.write_text(self._config_text())

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def _config_text(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # Large enough that a long outage backlog is never refused by the broker.
            "max_queued_messages 1000000",
            "max_inflight_messages 100",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            # As root mosquitto would switch to the 'mosquitto' user, which cannot read
            # a test's temporary files.
            lines.append("user root")
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.workdir}/",
                "persistence_file mosquitto.db",
                f"autosave_interval {self.autosave_interval_s}",
            ]
        if self.tls:
            lines += [
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
        return "\n".join(lines) + "\n"

    @property
    def address(self) -> str:
        """``host:port``, the form the emulated nucleus takes for its IoT Core bridge."""
        return f"{self.host}:{self.port}"

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def pause(self) -> None:
        """SIGSTOP: a broker that keeps its connections but stops answering."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Start and wait until the port accepts connections."""
        if self.is_running():
            return
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [str(self.executable), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir)
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self._process.returncode}: "
                                  f"{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise BrokerError(f"mosquitto did not listen on {self.port} in {timeout_s} s: "
                          f"{self.log_tail()}")

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Clean shutdown (SIGTERM): mosquitto saves its persistence database first."""
        process = self._process
        if process is None or process.poll() is not None:
            self._process = None
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise BrokerError(f"mosquitto ignored SIGTERM for {timeout_s} s") from None
        finally:
            self._process = None

    def kill(self) -> None:
        """Crash it (SIGKILL): messages since the last autosave are lost."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._process = None

    def restart(self, *, timeout_s: float = 10.0) -> None:
        self.stop(timeout_s=timeout_s)
        self.start(timeout_s=timeout_s)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
