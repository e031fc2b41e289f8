"""moto's standalone S3 server on a free loopback port, started as a child process.

It speaks the S3 REST protocol, so boto3 (and the agent's uploader) talk to it exactly
as to AWS, through ``endpoint_url``. It keeps its buckets in memory: a restart starts
empty. moto was chosen over MinIO because it is a Python package (no binary to fetch
on a machine without network beyond PyPI) and starts in about a second.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from agent.core.errors import AgentError
from agent.tools.brokers.mosquitto import free_port

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"
REGION = "us-east-1"


class S3ServerError(AgentError):
    """The local S3 server could not be started (moto missing, or it did not answer)."""


class LocalS3Server:
    """``with LocalS3Server(log_dir) as s3: s3.endpoint_url``; :meth:`client` is a boto3
    client for it. ``env`` adds environment variables for moto (its options)."""

    def __init__(self, log_dir: Path, *, env: Mapping[str, str] | None = None,
                 start_timeout_s: float = 30.0) -> None:
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.start_timeout_s = start_timeout_s
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        """Whether moto's server can be started here."""
        try:
            import moto.server  # noqa: F401
        except ImportError:
            return False
        return True

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalS3Server:
        if not self.available():
            raise S3ServerError("moto is not installed: pip install 'moto[server,s3]' "
                                "(the tools extra brings it)")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log = (self.log_dir / "s3-server.log").open("ab")
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
               "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION, **self.env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise S3ServerError(f"the S3 server exited with {self.process.returncode}; "
                                    f"see {self.log_dir / 's3-server.log'}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise S3ServerError(f"the S3 server did not answer on {self.endpoint_url} within "
                            f"{self.start_timeout_s:.0f} s")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # it answered
        except OSError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def reset(self) -> None:
        """Drop every bucket and object (moto's reset endpoint)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def client(self, *, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> object:
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id=access_key, aws_secret_access_key=secret_key)

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def moto_missing_reason() -> str:
    """Why the server cannot start here, for a test's skip ('' when it can)."""
    if LocalS3Server.available():
        return ""
    return "moto is not installed (pip install 'moto[server,s3]'); needed for S3 tests"
