"""Bad input and overload on the Open Inference Protocol server: each refusal answers
Triton's status with ``{"error": ...}`` and changes nothing; clients that vanish,
regions unregistered mid-request and more clients than the queue holds leak nothing.

Requests are raw HTTP (``http.client`` and sockets) so every status and body is seen as
sent. The slow model (digits-v1-slow, 20 ms a run) makes requests overlap on purpose.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from model_dirs import HOST_ARTIFACT
from serving import Served, serve_model
from waits import wait_for

from agent.core.errors import ConfigError
from agent.device.runtime import DlrBackend
from agent.device.serving.http_transport import HttpResponse, HttpServer

shm = pytest.importorskip("tritonclient.utils.shared_memory")

INPUT = {"name": "input", "datatype": "FP32", "shape": [1, 64]}


@pytest.fixture(scope="module")
def digits(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = serve_model(DlrBackend(artifact_dir=built_models / "digits-v1" / "dlr" /
                                    HOST_ARTIFACT), tmp_path_factory.mktemp("oip-errors"))
    yield served
    served.close()


@pytest.fixture(scope="module")
def slow(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The 20 ms model behind a queue of 4."""
    served = serve_model(DlrBackend(artifact_dir=built_models / "digits-v1-slow" / "dlr" /
                                    HOST_ARTIFACT), tmp_path_factory.mktemp("oip-slow"),
                         version="digits-v1-slow", queue_size=4)
    yield served
    served.close()


def request(served: Served, method: str, path: str, body: bytes | dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """One request on its own connection: status, headers, the JSON body (or raw bytes)."""
    connection = http.client.HTTPConnection("127.0.0.1", served.tcp.port, timeout=30)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    try:
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return response.status, dict(response.getheaders()), parsed
    finally:
        connection.close()


def infer(served: Served, body: bytes | dict[str, Any], headers: dict[str, str] | None = None,
          model: str = "digits") -> tuple[int, dict[str, str], Any]:
    return request(served, "POST", f"/v2/models/{model}/infer", body, headers)


def assert_error(answer: tuple[int, dict[str, str], Any], status: int, text: str) -> None:
    code, _, body = answer
    assert code == status, body
    assert isinstance(body, dict) and list(body) == ["error"] and text in body["error"], body


def json_request(x: np.ndarray | None = None) -> dict[str, Any]:
    x = np.zeros((1, 64), np.float32) if x is None else x
    return {"inputs": [{**INPUT, "data": x.ravel().tolist()}]}


def shm_request(region: str, size: int = 256, offset: int = 0,
                out: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{**INPUT, "parameters": {
        "shared_memory_region": region, "shared_memory_byte_size": size,
        "shared_memory_offset": offset}}]}
    if out is not None:
        body["outputs"] = [{"name": "probabilities", "parameters": {
            "shared_memory_region": out, "shared_memory_byte_size": 40}}]
    return body


class Region:
    """A POSIX shared memory object made with tritonclient's helper."""

    def __init__(self, size: int) -> None:
        self.key = f"/oip-err-{uuid.uuid4().hex[:12]}"
        self.handle = shm.create_shared_memory_region(self.key, self.key, size)

    def register(self, served: Served, name: str, size: int) -> None:
        answer = request(served, "POST", f"/v2/systemsharedmemory/region/{name}/register",
                         {"key": self.key, "offset": 0, "byte_size": size})
        assert answer[0] == 200, answer

    def close(self) -> None:
        shm.destroy_shared_memory_region(self.handle)


@pytest.fixture
def region() -> Iterator[Region]:
    made = Region(512)
    yield made
    made.close()


def test_unknown_model(digits: Served) -> None:
    served_before = digits.service.queue.stats.served
    assert_error(infer(digits, json_request(), model="nope"), 400, "unknown model 'nope'")
    assert_error(request(digits, "GET", "/v2/models/nope"), 400, "unknown model 'nope'")
    assert_error(request(digits, "POST", "/v2/models/digits/versions/v9/infer",
                         json_request()), 400, "no version 'v9'")
    assert digits.service.queue.stats.served == served_before


def test_wrong_dtype(digits: Served) -> None:
    body = json_request()
    body["inputs"][0]["datatype"] = "INT32"
    assert_error(infer(digits, body), 400, "data-type is 'INT32', but the model expects 'FP32'")


def test_wrong_shape(digits: Served) -> None:
    body = {"inputs": [{**INPUT, "shape": [1, 63], "data": [0.0] * 63}]}
    assert_error(infer(digits, body), 400, "has shape [1, 63], but the model expects [1, 64]")


def test_wrong_byte_size_binary(digits: Served) -> None:
    header = json.dumps({"inputs": [{**INPUT, "parameters": {"binary_data_size": 252}}]})
    answer = infer(digits, header.encode() + bytes(252),
                   {"Inference-Header-Content-Length": str(len(header))})
    assert_error(answer, 400, "binary_data_size is 252 bytes, FP32 [1, 64] takes 256")


def test_wrong_byte_size_shared_memory(digits: Served, region: Region) -> None:
    region.register(digits, "short", 512)
    try:
        assert_error(infer(digits, shm_request("short", size=252)), 400,
                     "takes 256 bytes, the request gives 252")
    finally:
        request(digits, "POST", "/v2/systemsharedmemory/region/short/unregister")


def test_body_over_the_limit_is_refused_before_it_is_read(digits: Served) -> None:
    with socket.create_connection(("127.0.0.1", digits.tcp.port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 104857600\r\n\r\n")  # 100 MiB announced, none sent
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk  # the server answers and closes without waiting for the body
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in head
    assert "over the server's limit of 67108864 bytes" in json.loads(body)["error"]
    assert infer(digits, json_request())[0] == 200


def test_malformed_json(digits: Served) -> None:
    assert_error(infer(digits, b'{"inputs": [{"name": "input",'), 400, "not valid JSON")


def test_binary_header_longer_than_the_body(digits: Served) -> None:
    body = json.dumps(json_request()).encode()
    assert_error(infer(digits, body, {"Inference-Header-Content-Length": str(len(body) + 1)}),
                 400, "is larger than the body")


def test_binary_header_not_a_number(digits: Served) -> None:
    assert_error(infer(digits, json.dumps(json_request()).encode(),
                       {"Inference-Header-Content-Length": "lots"}), 400,
                 "Inference-Header-Content-Length 'lots' is not a byte count")


def test_region_not_registered(digits: Served) -> None:
    assert_error(infer(digits, shm_request("ghost")), 400, "region 'ghost' is not registered")
    assert_error(request(digits, "GET", "/v2/systemsharedmemory/region/ghost/status"), 400,
                 "region 'ghost' is not registered")


def test_region_too_small(digits: Served, region: Region) -> None:
    region.register(digits, "small", 300)
    try:
        assert_error(infer(digits, shm_request("small", offset=128)), 400,
                     "region 'small' is too small (300 bytes; 256 at offset 128 are needed)")
    finally:
        request(digits, "POST", "/v2/systemsharedmemory/region/small/unregister")
    assert digits.registry.mapped == 0


def test_register_of_a_missing_object_registers_nothing(digits: Served) -> None:
    answer = request(digits, "POST", "/v2/systemsharedmemory/region/gone/register",
                     {"key": "/oip-err-no-such-object", "offset": 0, "byte_size": 64})
    assert_error(answer, 400, "no shared memory object")
    assert request(digits, "GET", "/v2/systemsharedmemory/status")[2] == []
    assert_error(request(digits, "POST", "/v2/systemsharedmemory/region/x/register",
                         b"{not json"), 400, "not valid JSON")


def test_a_failed_run_answers_500(built_models: Path, tmp_path: Path) -> None:
    served = serve_model(DlrBackend(artifact_dir=built_models / "digits-v1-crash" / "dlr" /
                                    HOST_ARTIFACT), tmp_path, version="digits-v1-crash")
    try:
        assert_error(infer(served, json_request()), 500, "RunDLRModel failed")
    finally:
        served.close()


def test_region_unregistered_while_a_request_uses_it(slow: Served, region: Region,
                                                     built_models: Path) -> None:
    x = np.random.default_rng(1).random((1, 64), dtype=np.float32)
    shm.set_shared_memory_region(region.handle, [x])
    region.register(slow, "busy", 512)
    region.register(slow, "busy-out", 512)
    answers: list[tuple[int, dict[str, str], Any]] = []
    runner = threading.Thread(target=lambda: answers.append(
        infer(slow, shm_request("busy", out="busy-out"))))
    with slow.router.loop.runtime_lock:  # the request holds its regions, waiting to run
        runner.start()
        wait_for(lambda: slow.service.queue.direct == 1, timeout_s=5)
        for name in ("busy", "busy-out"):
            answer = request(slow, "POST", f"/v2/systemsharedmemory/region/{name}/unregister")
            assert answer[0] == 200
        assert request(slow, "GET", "/v2/systemsharedmemory/status")[2] == []
        assert slow.registry.mapped == 2  # unregistered, still mapped for their user
    runner.join(timeout=10)
    (answer,) = answers
    assert answer[0] == 200, answer
    expected = [np.empty((1, 10), np.float32)]
    DlrBackend(artifact_dir=built_models / "digits-v1-slow" / "dlr" / HOST_ARTIFACT
               ).run_with([x], expected)
    got = shm.get_contents_as_numpy(region.handle, np.float32, [1, 10], offset=0)
    assert np.array_equal(got, expected[0])  # the output landed where the client asked
    wait_for(lambda: slow.registry.mapped == 0, timeout_s=5)  # released with its last user


def test_deadline_from_the_request_timeout(slow: Served) -> None:
    body = json_request()
    body["parameters"] = {"timeout": 2000}  # microseconds, as tritonclient's timeout= sends
    with slow.router.loop.runtime_lock:  # the model is busy for longer than that
        assert_error(infer(slow, body), 503, "no answer within 0.002 s")
    assert infer(slow, body)[0] == 200  # the same request, the model free: in time


def test_a_client_killed_mid_request_ends_only_its_connection(digits: Served) -> None:
    threads_before = threading.active_count()
    script = (f"import socket, sys, time\n"
              f"s = socket.create_connection(('127.0.0.1', {digits.tcp.port}))\n"
              f"s.sendall(b'POST /v2/models/digits/infer HTTP/1.1\\r\\nHost: x\\r\\n'\n"
              f"          b'Content-Length: 4000\\r\\n\\r\\n' + b'{{' * 2000)\n"
              f"print('sent', flush=True)\n"
              f"time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "sent"
        wait_for(lambda: digits.tcp.connections == 1, timeout_s=5)
        child.kill()
        child.wait(timeout=5)
    finally:
        if child.poll() is None:
            child.kill()
    wait_for(lambda: digits.tcp.connections == 0, timeout_s=5)
    wait_for(lambda: threading.active_count() <= threads_before, timeout_s=5)
    assert infer(digits, json_request())[0] == 200


def test_sixteen_clients_over_a_queue_of_four(slow: Served) -> None:
    rss_before = psutil.Process().memory_info().rss
    threads_before = threading.active_count()
    statuses: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(3):
            code, headers, body = infer(slow, json_request())
            with lock:
                statuses.append(code)
                if code == 503:
                    assert headers.get("Retry-After") == "1"
                    errors.append(body["error"])

    clients = [threading.Thread(target=client) for _ in range(16)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in clients)  # none hangs
    assert len(statuses) == 48 and set(statuses) == {200, 503}
    assert all("queue is full" in error for error in errors)
    assert slow.service.queue.stats.busy >= statuses.count(503)
    wait_for(lambda: slow.tcp.connections == 0, timeout_s=5)
    wait_for(lambda: threading.active_count() <= threads_before, timeout_s=5)
    assert psutil.Process().memory_info().rss - rss_before < 64 * 1024 * 1024


def test_tcp_listener_is_not_reachable_on_a_non_loopback_address(digits: Served) -> None:
    addresses = [a.address for nics in psutil.net_if_addrs().values() for a in nics
                 if a.family == socket.AF_INET and not a.address.startswith("127.")]
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    for address in addresses:
        with pytest.raises(OSError):
            socket.create_connection((address, digits.tcp.port), timeout=2).close()
    assert request(digits, "GET", "/v2/health/live")[0] == 200  # the loopback one answers


@pytest.mark.parametrize(("raw", "status", "text"), [
    (b"POST /v2/models/digits/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411,
     "chunked request bodies"),
    (b"GET /v2 HTTP/1.1\r\n" + b"X-Filler: " + b"a" * 70000 + b"\r\n\r\n", 431,
     "header block"),
    (b"GET /v2\r\n\r\n", 400, "malformed request line"),
    (b"GET /v2 HTTP/1.1\r\nContent-Length: many\r\n\r\n", 400, "not a byte count"),
    (b"DELETE /v2/models/digits HTTP/1.1\r\n\r\n", 405, "Method Not Allowed"),
    (b"GET /v3/anything HTTP/1.1\r\n\r\n", 404, "no such endpoint"),
])
def test_requests_the_transport_refuses(digits: Served, raw: bytes, status: int,
                                        text: str) -> None:
    with socket.create_connection(("127.0.0.1", digits.tcp.port), timeout=10) as sock:
        sock.sendall(raw)
        reader = sock.makefile("rb")
        response = http.client.HTTPResponse(sock)
        response.fp = reader
        response.begin()
        body = json.loads(response.read())
    assert response.status == status and text in body["error"]


def test_connections_over_the_limit_are_answered_503() -> None:
    server = HttpServer(lambda r: HttpResponse(200, r.body), max_connections=2)
    server.start()
    try:
        assert server.port is not None
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        wait_for(lambda: server.connections == 2, timeout_s=5)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as extra:
            answer = b""
            while chunk := extra.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 ") and b"too many connections" in answer
        for sock in idle:
            sock.close()
        wait_for(lambda: server.connections == 0, timeout_s=5)
    finally:
        server.stop()


def test_the_unix_socket_replaces_a_stale_file_and_refuses_others(tmp_path: Path) -> None:
    path = tmp_path / "oip.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a dead server's leftover: bound, never removed
    stale.close()

    def echo(r: Any) -> HttpResponse:
        return HttpResponse(200, r.body)

    server = HttpServer(echo, host=None, socket_path=path)
    server.start()
    try:
        with pytest.raises(ConfigError, match="another server listens"):
            HttpServer(echo, host=None, socket_path=path).start()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            sock.sendall(b"POST /x HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
            assert sock.recv(4096).endswith(b"\r\n\r\nhi")
    finally:
        server.stop()
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="is not a socket"):
        HttpServer(echo, host=None, socket_path=path).start()
    assert path.read_text() == "not a socket"
