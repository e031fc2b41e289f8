"""Applications ask for captures: a real ``edge-agent serve`` (``--source api``, libdlr,
digits v1) with capture on and every automatic rule off (``sampleRate: 0``), asked over
HTTP (plain JSON and the unchanged ``tritonclient``, binary tensors) and over the native
client (inline and in a shared region), with a label and a note.

Each answer that asked names its capture, and the capture files the agent wrote under
``<stateDir>/capture/`` (decoded with :func:`agent.device.capture.record.decode`) are
exactly those: the input sent, the output answered, the application's label and note, the
``request`` rule. Requests that did not ask are not captured; bad capture parameters are
refused (400, ``RequestFormatError``) and capture nothing; an agent whose capture is off
answers an ask as any request, with no capture id and nothing on disk.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_process import AgentProcess
from waits import wait_for

from agent.client import InferenceClient, SharedRegion
from agent.core.errors import RequestFormatError
from agent.device.capture.errors import CaptureFormatError
from agent.device.capture.record import MAX_TEXT, Capture, decode

httpclient = pytest.importorskip("tritonclient.http")

INFER = "/v2/models/digits/infer"
CAPTURE_ON = """\
capture:
  enabled: true
  rules: {sampleRate: 0, lowConfidence: null, disagreement: false, errors: false,
          requests: true}
  batch: {maxCaptures: 1000, maxAgeSeconds: 3600}
"""


@dataclass
class Running:
    """One agent process and what the tests asked it to keep."""

    folder: Path
    agent: AgentProcess
    endpoints: dict[str, str]
    asked: dict[str, dict[str, Any]] = field(default_factory=dict)  # capture id -> expected

    @property
    def state(self) -> Path:
        return self.folder / "state"

    @property
    def port(self) -> int:
        return int(self.endpoints["http"].rsplit(":", 1)[1])

    def stored(self) -> dict[str, Capture]:
        """Every capture file under ``<stateDir>/capture`` (open and sealed), decoded."""
        found: dict[str, Capture] = {}
        for path in sorted((self.state / "capture").rglob("*.npz")):
            try:
                capture = decode(path.read_bytes())
            except (FileNotFoundError, CaptureFormatError):
                continue  # moved into a batch meanwhile: read there on the next look
            found[capture.capture_id] = capture
        return found

    def wait_stored(self, ids: set[str]) -> dict[str, Capture]:
        """The stored captures once every id in ``ids`` is on disk (30 s at most)."""
        def ready() -> dict[str, Capture] | None:
            found = self.stored()
            return found if ids <= set(found) else None

        return wait_for(ready, timeout_s=30)


def _endpoints(state: Path) -> dict[str, str] | None:
    try:
        found = dict(json.loads((state / "endpoints.json").read_text()))
    except (FileNotFoundError, ValueError):
        return None
    return found if {"http", "native"} <= set(found) else None


def _start(built_models: Path, name: str, config: str) -> Running:
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))  # short socket paths
    (folder / "agent.yaml").write_text(config)
    agent = AgentProcess(thing=name, model=built_models / "digits-v1",
                         state_dir=folder / "state", broker_port=None,
                         log_path=folder / "agent.log",
                         extra=["--backend", "dlr", "--source", "api",
                                "--config", str(folder / "agent.yaml")]).start()
    try:
        endpoints = wait_for(lambda: _endpoints(folder / "state"), timeout_s=60)
    except BaseException:
        agent.kill()
        raise
    return Running(folder=folder, agent=agent, endpoints=endpoints)


def _stop(running: Running) -> None:
    assert running.agent.stop() == 0, running.agent.log()
    shutil.rmtree(running.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def capturing(built_models: Path) -> Iterator[Running]:
    running = _start(built_models, "capreq-on", CAPTURE_ON)
    yield running
    _stop(running)


def digit(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 64), dtype=np.float32)


def post(running: Running, body: dict[str, Any]) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
    try:
        connection.request("POST", INFER, body=json.dumps(body).encode())
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def json_infer(running: Running, x: np.ndarray, **params: Any) -> tuple[int, Any]:
    return post(running, {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                      "data": x.ravel().tolist()}], "parameters": params})


def expect(running: Running, capture_id: str, x: np.ndarray, scores: np.ndarray,
           label: str | None, note: str | None) -> None:
    assert len(capture_id) == 32 and capture_id not in running.asked
    running.asked[capture_id] = {"x": x, "scores": scores, "label": label, "note": note}


def check_stored(running: Running) -> None:
    """Exactly the asked captures are on disk, each with its input, output, label, note."""
    stored = running.wait_stored(set(running.asked))
    assert set(stored) == set(running.asked)
    for capture_id, want in running.asked.items():
        capture = stored[capture_id]
        assert (capture.rule, capture.source, capture.served_by) == ("request", "api", "blue")
        assert (capture.label, capture.note) == (want["label"], want["note"])
        assert capture.variants == {"blue": "digits-v1"}
        assert (capture.thing, capture.model) == ("capreq-on", "digits")
        assert np.array_equal(capture.inputs["input"], want["x"])
        assert np.array_equal(capture.outputs["blue"]["probabilities"], want["scores"])


# ---- HTTP --------------------------------------------------------------------------------

def test_http_json_and_tritonclient_asks_are_captured_with_their_label_and_note(
        capturing: Running) -> None:
    x = digit(1)
    status, answer = json_infer(capturing, x, capture=True, capture_label="7",
                                capture_note="camera 2, glare")
    assert status == 200, answer
    scores = np.array(answer["outputs"][0]["data"], np.float32).reshape(1, 10)
    expect(capturing, answer["parameters"]["capture_id"], x, scores, "7", "camera 2, glare")

    status, answer = json_infer(capturing, digit(2))  # no ask: not captured
    assert status == 200 and "capture_id" not in answer["parameters"]
    status, answer = json_infer(capturing, digit(3), capture=False, capture_label="ignored")
    assert status == 200 and "capture_id" not in answer["parameters"]

    with httpclient.InferenceServerClient(capturing.endpoints["http"].removeprefix(
            "http://")) as triton:
        for seed, label in ((4, "triton-4"), (5, None)):
            request = httpclient.InferInput("input", [1, 64], "FP32")
            request.set_data_from_numpy(digit(seed))  # binary tensors
            params: dict[str, Any] = {"capture": True}
            if label is not None:
                params["capture_label"] = label
            result = triton.infer("digits", [request], parameters=params)
            expect(capturing, result.get_response()["parameters"]["capture_id"], digit(seed),
                   result.as_numpy("probabilities"), label, None)
        request = httpclient.InferInput("input", [1, 64], "FP32")
        request.set_data_from_numpy(digit(6))
        plain = triton.infer("digits", [request])
        assert "capture_id" not in plain.get_response()["parameters"]
    check_stored(capturing)


@pytest.mark.parametrize(("params", "message"), [
    ({"capture": "yes"}, "parameters.capture must be true or false, not a string"),
    ({"capture": 1}, "parameters.capture must be true or false, not a number"),
    ({"capture": True, "capture_label": 7}, "parameters.capture_label must be a string, not "
                                            "a number"),
    ({"capture": True, "capture_label": "x" * (MAX_TEXT + 1)},
     f"parameters.capture_label is {MAX_TEXT + 1} characters long, over the limit of "
     f"{MAX_TEXT}"),
    ({"capture": True, "capture_note": ["a"]}, "parameters.capture_note must be a string"),
])
def test_bad_capture_parameters_are_refused_and_capture_nothing(
        capturing: Running, params: dict[str, Any], message: str) -> None:
    status, answer = json_infer(capturing, digit(7), **params)
    assert status == 400 and message in answer["error"], answer
    # A good ask after it: once it is on disk, anything before it would be too.
    x = digit(8)
    status, answer = json_infer(capturing, x, capture=True, capture_label="after-bad")
    assert status == 200, answer
    expect(capturing, answer["parameters"]["capture_id"], x,
           np.array(answer["outputs"][0]["data"], np.float32).reshape(1, 10), "after-bad",
           None)
    check_stored(capturing)


# ---- the native client -------------------------------------------------------------------

def test_native_asks_are_captured_inline_and_in_a_shared_region(capturing: Running) -> None:
    with InferenceClient(capturing.endpoints["native"]) as client:
        x = digit(10)
        kept = client.infer({"input": x}, capture=True, label="native-1", note="é" * MAX_TEXT)
        expect(capturing, kept.capture_id, x, kept.outputs["probabilities"].copy(),
               "native-1", "é" * MAX_TEXT)
        assert client.infer({"input": digit(11)}).capture_id == ""
        assert client.infer({"input": digit(12)}, label="no ask").capture_id == ""
        with pytest.raises(RequestFormatError, match="capture_label is 1025 characters long"):
            client.infer({"input": digit(13)}, capture=True, label="l" * (MAX_TEXT + 1))
        layout = client.layout()
        key = f"/capreq-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with SharedRegion.create(key, layout.nbytes) as region:
            client.register_region("capreq", region)
            x = digit(14)
            layout.input(region, "input")[...] = x
            kept = client.infer_layout(layout, region, capture=True, label="region")
            expect(capturing, kept.capture_id, x, kept.outputs["probabilities"].copy(),
                   "region", None)
            assert client.infer_layout(layout, region).capture_id == ""
            client.unregister_region("capreq")
    check_stored(capturing)


# ---- capture off ---------------------------------------------------------------------------

def test_an_agent_with_capture_off_answers_asks_without_capturing(built_models: Path) -> None:
    running = _start(built_models, "capreq-off", "capture: {enabled: false}\n")
    try:
        x = digit(20)
        status, answer = json_infer(running, x, capture=True, capture_label="7")
        assert status == 200 and "capture_id" not in answer["parameters"], answer
        status, plain = json_infer(running, x)
        assert answer["outputs"] == plain["outputs"]
        status, answer = json_infer(running, x, capture=True, capture_label=7)
        assert status == 400 and "capture_label must be a string" in answer["error"]
        with InferenceClient(running.endpoints["native"]) as client:
            result = client.infer({"input": x}, capture=True, label="7", note="n")
            assert result.capture_id == ""
            assert np.array_equal(result.outputs["probabilities"],
                                  np.array(plain["outputs"][0]["data"],
                                           np.float32).reshape(1, 10))
        time.sleep(0.5)  # what a writer thread would have needed to write anything
        assert not (running.state / "capture").exists()
        assert not list(running.state.rglob("*.npz"))
    finally:
        _stop(running)
