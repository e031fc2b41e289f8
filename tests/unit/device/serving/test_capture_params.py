"""An application's capture ask over HTTP: the parameters parsed (every bad one a
``RequestFormatError`` naming it, fuzzed), and the ask carried through the real Open
Inference Protocol server, variants router and DLR runtime to the capture hook, whose
capture id comes back in the response's ``parameters``. The hook here is a stand-in that
records what it is given (the real capture tap is tested with the running agent)."""

from __future__ import annotations

import http.client
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fuzz import BRIEF, LONG
from hypothesis import given
from hypothesis import strategies as st
from model_dirs import HOST_ARTIFACT
from serving import Served, serve_model

from agent.core.errors import AgentError, InferenceError, RequestFormatError
from agent.device.capture.record import MAX_TEXT
from agent.device.inference.capture_hooks import CaptureAsk, CaptureHooks
from agent.device.inference.requests import InferenceRequest
from agent.device.runtime import DlrBackend
from agent.device.serving import oip_codec
from agent.device.serving.capture_params import capture_ask, from_parameters

shm = pytest.importorskip("tritonclient.utils.shared_memory")

INFER = "/v2/models/digits/infer"
LONG_TEXT = "x" * (MAX_TEXT + 1)


# ---- the parameters ------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "ask"), [
    ({}, None),
    ({"binary_data_output": True}, None),
    ({"capture": False}, None),
    ({"capture": None}, None),
    ({"capture": True}, CaptureAsk()),
    ({"capture": True, "capture_label": "7", "capture_note": "glare"}, CaptureAsk("7", "glare")),
    ({"capture": True, "capture_label": None, "capture_note": ""}, CaptureAsk(None, "")),
    ({"capture": True, "capture_label": "é" * MAX_TEXT}, CaptureAsk("é" * MAX_TEXT)),
    ({"capture_label": "7"}, None),  # a label without capture=true asks for nothing
    ({"capture": False, "capture_note": "n"}, None),
])
def test_parameters_that_ask_for_a_capture_or_do_not(params: dict[str, Any],
                                                     ask: CaptureAsk | None) -> None:
    assert from_parameters(params) == ask


@pytest.mark.parametrize(("params", "message"), [
    ({"capture": "true"}, "parameters.capture must be true or false, not a string"),
    ({"capture": 1}, "parameters.capture must be true or false, not a number"),
    ({"capture": [True]}, "parameters.capture must be true or false, not a list"),
    ({"capture": True, "capture_label": 7}, "parameters.capture_label must be a string, not a "
                                            "number"),
    ({"capture": True, "capture_label": LONG_TEXT},
     f"parameters.capture_label is {MAX_TEXT + 1} characters long, over the limit of "
     f"{MAX_TEXT}"),
    ({"capture": True, "capture_note": {"a": 1}}, "parameters.capture_note must be a string, "
                                                  "not an object"),
    ({"capture": True, "capture_note": LONG_TEXT}, "parameters.capture_note is 1025 characters"),
    ({"capture_label": False}, "parameters.capture_label must be a string, not a boolean"),
])
def test_bad_parameters_are_a_format_error_naming_them(params: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(RequestFormatError, match=re.escape(message)):
        from_parameters(params)


def test_the_native_names_have_no_parameters_prefix() -> None:
    assert capture_ask(True, "3", None) == CaptureAsk("3")
    with pytest.raises(RequestFormatError, match=r"^capture_label is 1025 characters long"):
        capture_ask(True, LONG_TEXT)


def _body(params: Any) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2],
                                   "data": [0.5, 1.5]}], "parameters": params}).encode()


def test_an_infer_request_carries_the_ask() -> None:
    parsed = oip_codec.parse_infer_request(_body({"capture": True, "capture_label": "3",
                                                  "timeout": 1000}), None)
    assert parsed.capture == CaptureAsk("3", None) and parsed.timeout_s == 0.001
    assert oip_codec.parse_infer_request(_body({}), None).capture is None
    with pytest.raises(RequestFormatError, match=r"parameters\.capture must be true or false"):
        oip_codec.parse_infer_request(_body({"capture": "yes"}), None)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.text(alphabet="ab", min_size=MAX_TEXT - 1, max_size=MAX_TEXT + 2),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6)
_PARAMS = st.one_of(_JSON, st.dictionaries(
    st.sampled_from(["capture", "capture_label", "capture_note", "timeout",
                     "binary_data_output", "other"]), _JSON, max_size=5))


def _check_parse(params: Any) -> None:
    try:
        parsed = oip_codec.parse_infer_request(_body(params), None)
    except RequestFormatError:
        return
    ask = parsed.capture
    assert isinstance(params, dict)
    if ask is None:
        assert params.get("capture") is not True
        return
    assert params["capture"] is True
    assert (ask.label, ask.note) == (params.get("capture_label"), params.get("capture_note"))
    assert all(t is None or (isinstance(t, str) and len(t) <= MAX_TEXT)
               for t in (ask.label, ask.note))


@BRIEF
@given(_PARAMS)
def test_fuzz_parameters_parse_or_are_a_format_error(params: Any) -> None:
    _check_parse(params)


@pytest.mark.slow
@LONG
@given(_PARAMS)
def test_fuzz_parameters_parse_or_are_a_format_error_long(params: Any) -> None:
    _check_parse(params)


# ---- through the real server -------------------------------------------------------------

class Hook:
    """Records every answered request's ask and input; keeps (gives an id to) those that
    asked, as the capture tap does."""

    def __init__(self) -> None:
        self.seen: list[tuple[CaptureAsk | None, str, str, AgentError | None, np.ndarray]] = []
        self.kept: list[str] = []
        self.fail = False

    def __call__(self, request: InferenceRequest, variant: str, version: str,
                 error: AgentError | None) -> None:
        self.seen.append((request.capture, variant, version, error, request.inputs[0].copy()))
        if self.fail:
            raise RuntimeError("the hook broke")
        if request.capture is not None:
            request.capture_id = uuid.uuid4().hex
            self.kept.append(request.capture_id)


@pytest.fixture(scope="module")
def served(built_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = serve_model(DlrBackend(artifact_dir=built_models / "digits-v1" / "dlr" /
                                    HOST_ARTIFACT), tmp_path_factory.mktemp("oip-capture"))
    yield served
    served.close()


@pytest.fixture
def hook(served: Served) -> Iterator[Hook]:
    made = Hook()
    served.router.set_capture(CaptureHooks(request=made))
    yield made
    served.router.set_capture(None)


def post(served: Served, body: bytes | dict[str, Any], path: str = INFER) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", served.tcp.port, timeout=30)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    try:
        connection.request("POST", path, body=data)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def digit(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 64), dtype=np.float32)


def json_request(x: np.ndarray, params: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                        "data": x.ravel().tolist()}], "parameters": params}


def test_an_asked_capture_reaches_the_hook_and_its_id_comes_back(served: Served,
                                                                 hook: Hook) -> None:
    x = digit(1)
    status, answer = post(served, json_request(x, {"capture": True, "capture_label": "7",
                                                   "capture_note": "camera 2"}))
    assert status == 200, answer
    ask, variant, version, error, seen = hook.seen[-1]
    assert (ask, variant, version, error) == (CaptureAsk("7", "camera 2"), "blue", "digits-v1",
                                              None)
    assert np.array_equal(seen, x)
    assert answer["parameters"]["capture_id"] == hook.kept[-1]
    assert answer["parameters"]["variant"] == "blue"

    status, answer = post(served, json_request(x, {}))
    assert status == 200 and "capture_id" not in answer["parameters"]
    assert hook.seen[-1][0] is None and len(hook.kept) == 1


def test_without_a_hook_an_ask_is_answered_without_a_capture_id(served: Served) -> None:
    status, answer = post(served, json_request(digit(2), {"capture": True}))
    assert status == 200 and "capture_id" not in answer["parameters"]


@pytest.mark.parametrize(("params", "message"), [
    ({"capture": "yes"}, "parameters.capture must be true or false"),
    ({"capture": True, "capture_label": 3}, "parameters.capture_label must be a string"),
    ({"capture": True, "capture_label": LONG_TEXT}, "over the limit of 1024"),
])
def test_bad_parameters_are_400_and_never_reach_the_model(
        served: Served, hook: Hook, params: dict[str, Any], message: str) -> None:
    status, answer = post(served, json_request(digit(3), params))
    assert status == 400 and message in answer["error"], answer
    assert hook.seen == []


def test_a_failing_hook_never_costs_the_answer(served: Served, hook: Hook) -> None:
    hook.fail = True
    status, answer = post(served, json_request(digit(4), {"capture": True}))
    assert status == 200 and len(answer["outputs"][0]["data"]) == 10
    assert "capture_id" not in answer["parameters"] and len(hook.seen) == 1


def test_a_shared_memory_request_that_asks_is_never_answered_from_a_plan(
        served: Served, hook: Hook) -> None:
    key = f"/oip-capture-{uuid.uuid4().hex[:12]}"
    handle = shm.create_shared_memory_region(key, key, 512)
    try:
        assert post(served, {"key": key, "offset": 0, "byte_size": 512},
                    "/v2/systemsharedmemory/region/r/register")[0] == 200
        served.app.plans = type(served.app.plans)()
        region = "r"

        def body(params: dict[str, Any]) -> bytes:
            return json.dumps({
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                            "parameters": {"shared_memory_region": region,
                                           "shared_memory_byte_size": 256}}],
                "outputs": [{"name": "probabilities", "parameters": {
                    "shared_memory_region": region, "shared_memory_byte_size": 40,
                    "shared_memory_offset": 256}}],
                "parameters": params}).encode()

        shm.set_shared_memory_region(handle, [digit(5)])
        ids = []
        for _ in range(3):
            status, answer = post(served, body({"capture": True, "capture_label": "5"}))
            assert status == 200, answer
            ids.append(answer["parameters"]["capture_id"])
        assert ids == hook.kept and len(set(ids)) == 3
        assert len(served.app.plans) == 0  # none made for the asking request
        for _ in range(2):
            status, answer = post(served, body({}))
            assert status == 200 and "capture_id" not in answer["parameters"]
        assert len(served.app.plans) == 1  # the plain one is planned, as before
        assert [s[0] for s in hook.seen] == [CaptureAsk("5")] * 3 + [None] * 2
    finally:
        post(served, b"", "/v2/systemsharedmemory/unregister")
        shm.destroy_shared_memory_region(handle)


def test_weighted_shadow_and_failed_answers_all_reach_the_hook(
        built_models: Path, tmp_path: Path) -> None:
    def dlr(name: str) -> DlrBackend:
        return DlrBackend(artifact_dir=built_models / name / "dlr" / HOST_ARTIFACT)

    (tmp_path / "w").mkdir()
    (tmp_path / "c").mkdir()

    served = serve_model(dlr("digits-v1"), tmp_path / "w")
    made = Hook()
    try:
        served.router.set_capture(CaptureHooks(request=made))
        served.router.load_green(dlr("digits-v2"), "digits-v2")
        served.router.set_weights(50, 50)
        answers = [post(served, json_request(digit(i), {"capture": True}))[1]
                   for i in range(4)]
        assert [(a["parameters"]["variant"], a["model_version"]) for a in answers] == [
            (v, version) for _, v, version, _e, _x in made.seen]
        assert {a["parameters"]["variant"] for a in answers} == {"blue", "green"}
        assert [a["parameters"]["capture_id"] for a in answers] == made.kept
        served.router.shadow(1.0)
        answer = post(served, json_request(digit(9), {"capture": True, "capture_note": "s"}))[1]
        assert made.seen[-1][:4] == (CaptureAsk(None, "s"), "blue", "digits-v1", None)
        assert answer["parameters"]["capture_id"] == made.kept[-1]
    finally:
        served.close()

    failing = serve_model(dlr("digits-v1-crash"), tmp_path / "c")
    made = Hook()
    try:
        failing.router.set_capture(CaptureHooks(request=made))
        status, answer = post(failing, json_request(digit(1), {"capture": True,
                                                               "capture_label": "bad"}))
        assert status == 500 and "RunDLRModel failed" in answer["error"], answer
        ask, variant, version, error, x = made.seen[-1]
        assert (ask, variant, version) == (CaptureAsk("bad"), "blue", "digits-v1")
        assert isinstance(error, InferenceError) and str(error) == answer["error"]
        assert np.array_equal(x, digit(1))
    finally:
        failing.close()
