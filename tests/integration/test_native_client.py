"""The native protocol end to end: ``agent.client`` against the native server over a real
Unix socket, in front of the real runtimes (libdlr and ONNX Runtime) through the variants
router and the inference thread.

Outputs equal the backend's own in-process outputs exactly (DLR, ONNX, the two-input
fusion model); the shared-memory path copies nothing (outputs are views on the client's
region, the server's copy counter stays at 0); every bad input gets its typed error and
changes nothing; a full queue answers busy; a client killed mid-request and a region
unregistered while in use leak nothing; ``edge-agent predict --server`` answers through it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_process import AgentProcess
from model_dirs import colour_model_dir, fusion_inputs, fusion_model_dir
from native_serving import NativeStack, load, native_stack
from paths import REPO_ROOT
from waits import wait_for

from agent.cli.main import main
from agent.client import InferenceClient, SharedRegion
from agent.core.errors import (
    ConfigError,
    DeadlineExceededError,
    InputSpecError,
    ModelNotFoundError,
    RegionError,
    RequestFormatError,
    RequestTooLargeError,
    ServerBusyError,
)
from agent.device.serving.native_transport import FrameServer
from agent.wire.inference_frame_io import FrameReader, send_frame
from agent.wire.inference_frames import (
    Frame,
    InferHeader,
    Kind,
    TensorDesc,
    encode_infer,
    pack_prelude,
    raise_error_frame,
)

_keys = iter(range(1_000_000))


def _key(tag: str) -> str:
    return f"/nat-test-{os.getpid()}-{tag}-{next(_keys)}"


def _samples(model_dir: Path, count: int) -> np.ndarray:
    return np.load(model_dir / "testset.npz")["x"][:count].astype(np.float32)


def _reference(model_dir: Path, backend: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    runtime = load(model_dir, backend)
    try:
        outs = [np.empty(s.shape, s.dtype) for s in runtime.outputs]
        runtime.run_with(inputs, outs)
        return outs
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def digits_dir(built_models: Path) -> Path:
    return built_models / "digits-v1"


@pytest.fixture(scope="module")
def digits(digits_dir: Path) -> Iterator[NativeStack]:
    with native_stack(digits_dir, version="digits-v1") as stack:
        yield stack


@pytest.fixture()
def client(digits: NativeStack) -> Iterator[InferenceClient]:
    with digits.client() as c:
        yield c


@pytest.fixture(scope="module")
def fusion_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fusion_model_dir(tmp_path_factory.mktemp("fusion") / "fusion", onnx=True)


@pytest.fixture(scope="module")
def slow(built_models: Path) -> Iterator[NativeStack]:
    with native_stack(built_models / "digits-v1-slow", queue_size=4,
                      version="digits-v1-slow") as stack:
        yield stack


# ---- outputs are the backend's ------------------------------------------------------------

@pytest.mark.parametrize("backend", ["dlr", "onnx"])
@pytest.mark.parametrize("source", ["api", "testset"])
def test_native_infer_equals_the_backend_in_process(digits_dir: Path, backend: str,
                                                    source: str) -> None:
    samples = _samples(digits_dir, 6)
    with native_stack(digits_dir, backend=backend, source=source) as stack, \
            stack.client() as c:
        layout = c.layout()
        with SharedRegion.create(_key("eq"), layout.nbytes) as region:
            c.register_region("eq", region)
            for x in samples:
                x = x.reshape(1, 64)
                (want,) = _reference(digits_dir, backend, [x])
                inline = c.infer({"input": x})
                layout.input(region, "input")[...] = x
                placed = c.infer_layout(layout, region)
                assert inline.variant == placed.variant == "blue"
                assert np.array_equal(inline.outputs["probabilities"], want)
                assert np.array_equal(placed.outputs["probabilities"], want)
                assert inline.model_us > 0 and inline.total_us >= inline.model_us
        described = c.metadata()
        assert (described.name, described.platform) == ("digits", backend)


def test_fusion_model_two_inputs_inline_regions_and_mixed(fusion_dir: Path) -> None:
    cases = fusion_inputs(4)
    for backend in ("dlr", "onnx"):
        with native_stack(fusion_dir, backend=backend) as stack, stack.client() as c:
            layout = c.layout()
            with SharedRegion.create(_key("fusion"), layout.nbytes) as region:
                c.register_region("fusion", region)
                refs, outs = layout.input_refs(region), layout.output_refs(region)
                for frame, counts in zip(cases["sensor_frame"], cases["event_counts"],
                                         strict=True):
                    want = _reference(fusion_dir, backend, [frame, counts])
                    inline = c.infer({"sensor_frame": frame, "event_counts": counts})
                    layout.input(region, "sensor_frame")[...] = frame
                    layout.input(region, "event_counts")[...] = counts
                    placed = c.infer_layout(layout, region)
                    mixed = c.infer({"sensor_frame": frame,
                                     "event_counts": refs["event_counts"]},
                                    {"Identity_1:0": outs["Identity_1:0"]})
                    for result in (inline, placed, mixed):
                        for name, array in zip(("Identity:0", "Identity_1:0"), want,
                                               strict=True):
                            assert result.outputs[name].dtype == array.dtype
                            assert np.array_equal(result.outputs[name], array), name
                    assert np.shares_memory(mixed.outputs["Identity_1:0"],
                                            layout.output(region, "Identity_1:0"))
                    assert not np.shares_memory(mixed.outputs["Identity:0"],
                                                layout.output(region, "Identity:0"))


def test_region_path_is_zero_copy(digits: NativeStack, client: InferenceClient,
                                  digits_dir: Path) -> None:
    layout = client.layout()
    samples = _samples(digits_dir, 2)
    with SharedRegion.create(_key("zc"), layout.nbytes) as region:
        client.register_region("zc", region)
        frame = layout.input(region, "input")
        frame[...] = samples[0]
        before = digits.server.copied_bytes
        first = client.infer_layout(layout, region)
        scores = first.outputs["probabilities"]
        assert np.shares_memory(scores, layout.output(region, "probabilities"))
        assert np.array_equal(scores, _reference(digits_dir, "dlr", [frame.copy()])[0])
        frame[...] = samples[1]  # the next request writes into the same memory
        for _ in range(20):
            client.infer_layout(layout, region)
        assert np.array_equal(scores, _reference(digits_dir, "dlr", [frame.copy()])[0])
        assert digits.server.copied_bytes == before  # no tensor byte went through our code
        client.infer({"input": frame.copy()})  # inline: 256 B in, 40 B back
        assert digits.server.copied_bytes == before + 256 + 40
        client.unregister_region("zc")


def test_metadata_and_variants_on_native_traffic(built_models: Path) -> None:
    x = _samples(built_models / "digits-v1", 1).reshape(1, 64)
    with native_stack(built_models / "digits-v1", version="digits-v1") as stack, \
            stack.client() as c:
        described = c.metadata()
        assert described.versions == {"blue": "digits-v1"} and described.ready
        assert [(s.name, s.dtype, s.shape) for s in described.inputs] == \
            [("input", "float32", (1, 64))]
        assert [(s.name, s.shape) for s in described.outputs] == [("probabilities", (1, 10))]
        stack.router.load_green(load(built_models / "digits-v2"), "digits-v2")
        stack.router.set_weights(90, 10)
        assert c.metadata().versions == {"blue": "digits-v1", "green": "digits-v2"}
        answers = [c.infer({"input": x}) for _ in range(100)]
        assert sum(a.variant == "green" for a in answers) == 10
        assert {a.version for a in answers if a.variant == "green"} == {"digits-v2"}
        c.infer({"input": x}, version="digits-v2")
        stack.router.rollback()
        with pytest.raises(ModelNotFoundError, match="digits-v2"):
            c.infer({"input": x}, version="digits-v2")


def test_predict_server_prints_the_report_and_who_answered(
        digits: NativeStack, digits_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    x = _samples(digits_dir, 1).reshape(1, 64)
    np.save(tmp_path / "x.npy", x)
    code = main(["predict", "--server", str(digits.socket_path), "--input",
                 str(tmp_path / "x.npy"), "--json", "--top-k", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    (want,) = _reference(digits_dir, "dlr", [x])
    assert (report["model"], report["variant"], report["version"], report["backend"]) == \
        ("digits", "blue", "digits-v1", "dlr")
    values = np.array(report["outputs"][0]["values"], np.float32)
    assert np.array_equal(values, want)
    assert report["top_k"][0]["index"] == int(want.argmax())
    assert main(["predict", "--server", str(digits.socket_path), "--model", "m",
                 "--input", str(tmp_path / "x.npy")]) == 2
    assert "either --model" in capsys.readouterr().err


def test_predict_server_preprocesses_an_image_with_the_served_metadata(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = pytest.importorskip("PIL.Image")
    model = colour_model_dir(tmp_path / "colour")
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[..., 0] = 230
    image.fromarray(pixels).save(tmp_path / "red.png")
    with native_stack(model) as stack:
        assert InferenceClient(stack.socket_path).metadata().labels == ("red", "green", "blue")
        code = main(["predict", "--server", str(stack.socket_path), "--input",
                     str(tmp_path / "red.png"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["top_k"][0]["label"] == "red" and report["variant"] == "blue"


# ---- bad input: a typed error, nothing changed --------------------------------------------

X = np.zeros((1, 64), np.float32)


def _bad_cases(region: SharedRegion) -> list[tuple[str, Callable[[InferenceClient], Any],
                                                   type[Exception], str]]:
    return [
        ("unknown model", lambda c: c.infer({"input": X}, model="nope"),
         ModelNotFoundError, "unknown model 'nope'"),
        ("unknown version", lambda c: c.infer({"input": X}, version="digits-v9"),
         ModelNotFoundError, "no version 'digits-v9'"),
        ("unknown input", lambda c: c.infer({"input": X, "extra": X}),
         InputSpecError, "no input 'extra'"),
        ("missing input", lambda c: c.infer({}), InputSpecError, "missing input"),
        ("wrong dtype", lambda c: c.infer({"input": X.astype(np.float64)}),
         InputSpecError, "dtype float64"),
        ("wrong shape", lambda c: c.infer({"input": X.reshape(8, 8)}),
         InputSpecError, r"shape \[8, 8\]"),
        ("wrong byte size in a region", lambda c: c.infer({"input": region.ref(0, 200)}),
         RegionError, "gives 200"),
        ("region not registered", lambda c: c.infer({"input": _unregistered(region)}),
         RegionError, "'ghost' is not registered"),
        ("region too small", lambda c: c.infer({"input": region.ref(4096, 256)}),
         RegionError, "too small"),
        ("output of the wrong region size",
         lambda c: c.infer({"input": X}, {"probabilities": region.ref(0, 44)}),
         RegionError, "gives 44"),
        ("unknown output", lambda c: c.infer({"input": X}, {"scores": region.ref(0, 40)}),
         InputSpecError, "no output 'scores'"),
        ("register a missing object",
         lambda c: c._json(Kind.REGISTER, {"name": "m", "key": "/nat-missing", "offset": 0,
                                           "byte_size": 8}),
         RegionError, "no shared memory object"),
        ("register a taken name",
         lambda c: c.register_region("bad", SharedRegion.attach(region.key)),
         RegionError, "already registered"),
        ("register past the object's end",
         lambda c: c.register_region("past", region, offset=4096, byte_size=8192),
         RegionError, "pass the end"),
    ]


def _unregistered(region: SharedRegion) -> Any:
    ghost = SharedRegion.attach(region.key)
    ghost.name = "ghost"
    return ghost.ref(0, 256)


def test_every_bad_request_gets_its_typed_error_and_changes_nothing(
        digits: NativeStack, client: InferenceClient) -> None:
    with SharedRegion.create(_key("bad"), 8192) as region:
        client.register_region("bad", region, byte_size=4096)
        status = client.region_status()
        good = client.infer({"input": X}).outputs["probabilities"].copy()
        served = digits.loop.requests.stats.served  # type: ignore[union-attr]
        for what, call, error, message in _bad_cases(region):
            with pytest.raises(error, match=message):
                call(client)
            assert client.region_status() == status, what
            assert np.array_equal(client.infer({"input": X}).outputs["probabilities"],
                                  good), what
        # the refused requests never ran: only the good ones were served
        assert digits.loop.requests.stats.served == served + len(_bad_cases(region))  # type: ignore[union-attr]
        assert client.unregister_region("bad") == ["bad"]
    assert digits.registry.mapped == 0


def _raw_exchange(path: Path, data: bytes) -> tuple[Frame | None, bytes]:
    """Send raw bytes; the reply frame and what follows it before the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        reader = FrameReader(sock, max_payload=1 << 20)
        reply = reader.read(own_payload=True)
        rest = sock.recv(100)
    return reply, rest


def _infer_bytes(header: InferHeader, payload: bytes = b"") -> bytes:
    data = encode_infer(header)
    return pack_prelude(Kind.INFER, 5, len(data), len(payload)) + data + payload


ONE_INLINE = InferHeader(model="", version="", timeout_us=0, outputs=(),
                         inputs=(TensorDesc("input", "float32", (1, 64), 0, 256),))


@pytest.mark.parametrize(("data", "error", "message"), [
    (b"GET /v2/health/ready HTTP/1.1\r\n\r\n", RequestFormatError, "magic"),
    (pack_prelude(Kind.INFER, 1, 300_000, 0), RequestTooLargeError, "frame header"),
    (pack_prelude(99, 1, 0, 0), RequestFormatError, "kind 99"),
    (pack_prelude(Kind.REGISTER, 1, 5, 0) + b"{nope", RequestFormatError, "not JSON"),
    (pack_prelude(Kind.REGISTER, 1, 2, 0) + b"[]", RequestFormatError, "JSON object"),
    (pack_prelude(Kind.REGISTER, 1, 22, 0) + b'{"name":1,"key":"/k"} ', RequestFormatError,
     "string name"),
    (_infer_bytes(ONE_INLINE)[:40], None, ""),  # cut short: the server waits, then EOF
    (pack_prelude(Kind.INFER, 5, 10, 0) + b"\x01" * 10, RequestFormatError, "ends inside"),
    (_infer_bytes(ONE_INLINE, b"\0" * 100), RequestFormatError, "pass the end of the payload"),
    (_infer_bytes(InferHeader(model="", version="", timeout_us=0, inputs=(
        TensorDesc("input", "float32", (1, 64), 0, 256, region="r"),), outputs=(
        TensorDesc("probabilities", "float32", (1, 10), 0, 40),))), RequestFormatError,
     "only outputs in regions"),
])
def test_a_malformed_frame_is_answered_and_the_connection_closed(
        digits: NativeStack, client: InferenceClient, data: bytes,
        error: type[Exception] | None, message: str) -> None:
    if error is None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(digits.socket_path))
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # the stream ends inside the frame
            sock.settimeout(5)
            assert sock.recv(100) == b""
    else:
        reply, rest = _raw_exchange(digits.socket_path, data)
        assert reply is not None and reply.kind == Kind.ERROR
        assert rest == b"", "the connection must be closed after a malformed frame"
        with pytest.raises(error, match=message):
            raise_error_frame(reply)
    assert client.infer({"input": X}).variant == "blue"  # the server goes on serving


def test_inline_byte_size_that_does_not_fit_its_shape(digits: NativeStack,
                                                      client: InferenceClient) -> None:
    header = InferHeader(model="", version="", timeout_us=0, outputs=(),
                         inputs=(TensorDesc("input", "float32", (1, 64), 0, 200),))
    with pytest.raises(InputSpecError, match="takes 256 bytes, the request gives 200"):
        client.roundtrip(Kind.INFER, encode_infer(header), (b"\0" * 256,))
    assert client.infer({"input": X}).variant == "blue"  # same connection, still in step


def test_a_payload_over_the_limit_is_refused(digits_dir: Path) -> None:
    with native_stack(digits_dir, max_body_bytes=1024) as stack, stack.client() as c:
        with pytest.raises(RequestTooLargeError, match="over the limit of 1024"):
            c.infer({"input": np.zeros((1, 4096), np.float32)})
        with pytest.raises(RequestTooLargeError):
            c.echo(b"x" * 2048)
        with pytest.raises(RequestTooLargeError):  # refused while it is still being sent
            c.echo(np.zeros(4 << 20, np.uint8))
        assert c.infer({"input": X}).variant == "blue"  # a new connection, served
        assert c.metadata().max_payload == 1024


# ---- load, deadlines, clients that go away ------------------------------------------------

def test_a_full_queue_answers_busy_and_nobody_hangs(slow: NativeStack) -> None:
    outcomes: list[str] = []
    lock = threading.Lock()

    def hammer() -> None:
        with slow.client() as c:
            for _ in range(3):
                try:
                    c.infer({"input": X}, timeout_s=10)
                    outcome = "ok"
                except ServerBusyError:
                    outcome = "busy"
                with lock:
                    outcomes.append(outcome)

    threads = [threading.Thread(target=hammer) for _ in range(16)]  # 16 clients, queue of 4
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert len(outcomes) == 48
    assert "busy" in outcomes and "ok" in outcomes, outcomes
    # at most 4 in flight at a time (20 ms each): the busy answers came at once
    assert time.monotonic() - started < 0.02 * outcomes.count("ok") + 5
    _wait(lambda: slow.server.transport.connections == 0)


def test_deadline_exceeded_while_the_model_is_busy(digits: NativeStack,
                                                   client: InferenceClient) -> None:
    with digits.loop.runtime_lock:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            client.infer({"input": X}, timeout_s=0.05)
        assert time.monotonic() - started < 2
    assert client.infer({"input": X}).variant == "blue"


CHILD = """
import sys
import numpy as np
from agent.client import InferenceClient
client = InferenceClient(sys.argv[1])
print("connected", flush=True)
client.infer({"input": np.zeros((1, 64), np.float32)}, timeout_s=30)
print("answered", flush=True)
"""


def _wait(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def _connection_threads() -> int:
    return sum(t.name.startswith("native-conn-") for t in threading.enumerate())


def test_a_client_killed_mid_request_leaks_nothing(digits: NativeStack,
                                                   client: InferenceClient) -> None:
    client.infer({"input": X})
    baseline = _connection_threads()
    queue = digits.loop.requests
    assert queue is not None
    with digits.loop.runtime_lock:  # the child's request waits for the model, mid-request
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(digits.socket_path)],
                                 cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "connected"
        _wait(lambda: queue.direct == 1)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    # At most the threads of before: a connection of an earlier test may still have been
    # closing when they were counted.
    _wait(lambda: queue.direct == 0 and _connection_threads() <= baseline)
    assert client.infer({"input": X}).variant == "blue"


def test_unregister_while_a_request_uses_the_region(digits: NativeStack,
                                                    client: InferenceClient,
                                                    digits_dir: Path) -> None:
    layout = client.layout()
    x = _samples(digits_dir, 1).reshape(1, 64)
    (want,) = _reference(digits_dir, "dlr", [x])
    results: list[Any] = []
    with SharedRegion.create(_key("busy"), layout.nbytes) as region:
        client.register_region("inuse", region)
        layout.input(region, "input")[...] = x
        queue = digits.loop.requests
        assert queue is not None
        other = digits.client()
        with digits.loop.runtime_lock:  # the request waits for the model, region in use
            user = threading.Thread(target=lambda: results.append(
                other.infer_layout(layout, region)))
            user.start()
            _wait(lambda: queue.direct == 1)
            assert client.unregister_region("inuse") == ["inuse"]
            assert client.region_status() == []
            assert digits.registry.mapped == 1  # still mapped for the running request
        user.join(10)
        other.close()
        assert np.array_equal(results[0].outputs["probabilities"], want)
        _wait(lambda: digits.registry.mapped == 0)
        with pytest.raises(RegionError, match="not registered"):
            client.infer_layout(layout, region)


def test_connections_beyond_the_limit_are_refused_busy(digits_dir: Path) -> None:
    with native_stack(digits_dir, max_connections=2) as stack:
        first, second = stack.client(), stack.client()
        first.metadata()
        second.metadata()
        with pytest.raises(ServerBusyError, match="2 connections"):
            stack.client().metadata()
        first.close()
        _wait(lambda: stack.server.transport.connections == 1)
        with stack.client() as third:
            assert third.infer({"input": X}).variant == "blue"
        second.close()


def test_socket_mode_stale_socket_and_a_live_one() -> None:
    folder = Path(tempfile.mkdtemp(prefix="nat-", dir="/tmp"))  # short: sun_path is small
    path = folder / "echo.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, as a killed agent leaves it

    def echo(frame: Frame) -> Frame:
        return Frame(frame.kind, frame.request_id, frame.header, frame.payload)

    with FrameServer(echo, path, socket_mode=0o660) as server:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        with pytest.raises(ConfigError, match="another server listens"):
            FrameServer(echo, path).start()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            send_frame(sock, Frame(Kind.ECHO, 4, b"hdr", (b"payload",)))
            reply = FrameReader(sock, max_payload=100).read()
            assert reply is not None and bytes(reply.body) == b"payload"
        assert server.accepted == 2  # the probe of the second server, and this client
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket"):
        FrameServer(echo, path).start()
    shutil.rmtree(folder)


# ---- the real agent -----------------------------------------------------------------------

def test_the_real_agent_serves_the_native_client_and_predict_server(
        built_models: Path, digits_dir: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="nat-agent-", dir="/tmp"))  # short socket paths
    state = folder / "state"
    agent = AgentProcess(thing="native-1", model=digits_dir, state_dir=state,
                         broker_port=None, log_path=folder / "agent.log", rate=100,
                         extra=["--backend", "dlr", "--source", "random"]).start()
    try:
        endpoints = wait_for(lambda: _endpoints(state), timeout_s=60)
        path = Path(endpoints["native"])
        assert path.resolve() == (state / "inference.sock").resolve()
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        x = _samples(digits_dir, 1).reshape(1, 64)
        (want,) = _reference(digits_dir, "dlr", [x])
        with InferenceClient(path) as c:
            described = c.metadata()
            assert (described.name, described.versions) == ("digits", {"blue": "digits-v1"})
            assert np.array_equal(c.infer({"input": x}).outputs["probabilities"], want)
            layout = c.layout()
            with SharedRegion.create(_key("agent"), layout.nbytes) as region:
                c.register_region("agent", region)
                layout.input(region, "input")[...] = x
                result = c.infer_layout(layout, region)
                assert np.array_equal(result.outputs["probabilities"], want)
                assert np.shares_memory(result.outputs["probabilities"],
                                        layout.output(region, "probabilities"))
                c.unregister_region("agent")
        np.save(folder / "x.npy", x)
        out = subprocess.run([sys.executable, "-m", "agent.cli", "predict", "--server",
                              str(path), "--input", str(folder / "x.npy"), "--json"],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert (report["variant"], report["version"]) == ("blue", "digits-v1")
        assert np.array_equal(np.array(report["outputs"][0]["values"], np.float32), want)
    finally:
        assert agent.stop() == 0, agent.log()
    assert not path.exists()  # the agent removed its socket
    shutil.rmtree(folder, ignore_errors=True)


def _endpoints(state: Path) -> dict[str, str] | None:
    try:
        found = dict(json.loads((state / "endpoints.json").read_text()))
    except (FileNotFoundError, ValueError):
        return None
    return found if "native" in found else None
