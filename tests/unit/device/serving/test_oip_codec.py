"""The Open Inference Protocol codec: infer requests parsed (JSON, binary, shared memory),
inputs decoded to the model's arrays, responses encoded; every malformed part refused
with its typed error."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from agent.core.errors import InputSpecError, RequestFormatError
from agent.core.model_layout import TensorSpec
from agent.device.serving import oip_codec as codec

FRAME = TensorSpec(name="frame", dtype="float32", shape=(1, 4))
COUNTS = TensorSpec(name="counts", dtype="int32", shape=(1, 3))


def _tensor(name: str = "frame", datatype: str = "FP32", shape: list[int] | None = None,
            **extra: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape or [1, 4], **extra}


def _body(header: dict[str, Any], *binary: bytes) -> tuple[bytes, str | None]:
    text = json.dumps(header).encode()
    return text + b"".join(binary), (str(len(text)) if binary else None)


def _parse(header: dict[str, Any], *binary: bytes) -> codec.InferRequest:
    body, length = _body(header, *binary)
    return codec.parse_infer_request(body, length)


def test_json_inputs_flat_or_nested_decode_to_the_models_array() -> None:
    flat = _parse({"inputs": [_tensor(data=[1, 2.5, 3, 4])]}).inputs[0]
    nested = _parse({"inputs": [_tensor(data=[[1, 2.5, 3, 4]])]}).inputs[0]
    for tensor in (flat, nested):
        array, copied = codec.decode_input(tensor, FRAME)
        assert array.dtype == np.float32 and array.shape == (1, 4)
        assert array.tolist() == [[1.0, 2.5, 3.0, 4.0]] and copied == 16


def test_binary_inputs_are_located_in_order_and_viewed_when_aligned() -> None:
    frame = np.arange(4, dtype=np.float32).reshape(1, 4)
    counts = np.array([[7, 8, 9]], dtype=np.int32)
    header = {"inputs": [_tensor(parameters={"binary_data_size": 16}),
                         _tensor("counts", "INT32", [1, 3], parameters={"binary_data_size": 12})],
              "id": "r1", "parameters": {"binary_data_output": True, "timeout": 2500}}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # JSON allows trailing blanks: the tensors land aligned
    body = bytearray(text + frame.tobytes() + counts.tobytes())
    parsed = codec.parse_infer_request(body, str(len(text)))
    assert parsed.id == "r1" and parsed.binary_output and parsed.timeout_s == 0.0025
    got_frame, copied_frame = codec.decode_input(parsed.inputs[0], FRAME)
    got_counts, copied_counts = codec.decode_input(parsed.inputs[1], COUNTS)
    assert np.array_equal(got_frame, frame) and np.array_equal(got_counts, counts)
    assert copied_frame == copied_counts == 0
    assert np.shares_memory(got_frame, np.frombuffer(body, np.uint8))


def test_an_unaligned_binary_input_is_copied_and_counted() -> None:
    frame = np.arange(4, dtype=np.float32).reshape(1, 4)
    header = {"inputs": [_tensor(parameters={"binary_data_size": 16})]}
    text = json.dumps(header).encode()
    text += b" " * ((1 - len(text)) % 4)  # the tensor starts at an odd offset
    parsed = codec.parse_infer_request(bytearray(text + frame.tobytes()), str(len(text)))
    array, copied = codec.decode_input(parsed.inputs[0], FRAME)
    assert np.array_equal(array, frame) and copied == 16 and array.flags.aligned


def test_shared_memory_inputs_and_outputs_are_parsed() -> None:
    parsed = _parse({
        "inputs": [_tensor(parameters={"shared_memory_region": "in",
                                       "shared_memory_byte_size": 16})],
        "outputs": [{"name": "probs", "parameters": {
            "shared_memory_region": "out", "shared_memory_byte_size": 40,
            "shared_memory_offset": 8}}, {"name": "other", "parameters": {"binary_data": False}}]})
    assert parsed.inputs[0].shm == codec.ShmRef("in", 0, 16)
    assert parsed.outputs is not None
    assert parsed.outputs[0].shm == codec.ShmRef("out", 8, 40)
    assert parsed.outputs[1] == codec.OutputRequest("other", binary=False)
    assert parsed.timeout_s is None and not parsed.binary_output


@pytest.mark.parametrize(("header", "binary", "message"), [
    ({"inputs": []}, (), "non-empty 'inputs'"),
    ({"inputs": [{"datatype": "FP32", "shape": [1, 4], "data": []}]}, (), "needs a 'name'"),
    ({"inputs": [_tensor(datatype=None, data=[1, 2, 3, 4])]}, (), "'datatype' string"),
    ({"inputs": [_tensor(shape=[1, -4], data=[1])]}, (), "non-negative integers"),
    ({"inputs": [_tensor()]}, (), "exactly one of"),
    ({"inputs": [_tensor(data=[1, 2, 3, 4], parameters={"binary_data_size": 16})]},
     (b"x" * 16,), "exactly one of"),
    ({"inputs": [_tensor(data=[1, 2, 3, 4]), _tensor(data=[1, 2, 3, 4])]}, (), "given twice"),
    ({"inputs": [_tensor(parameters={"binary_data_size": 16})]}, (b"x" * 8,),
     "passes the end of the body"),
    ({"inputs": [_tensor(parameters={"binary_data_size": 8})]}, (b"x" * 16,), "add up to 8"),
    ({"inputs": [_tensor(parameters={"binary_data_size": "16"})]}, (b"x" * 16,),
     "must be a byte count"),
    ({"inputs": [_tensor(parameters={"shared_memory_region": "in"})]}, (),
     "shared_memory_byte_size (required)"),
    ({"inputs": [_tensor(parameters={"shared_memory_byte_size": 16})]}, (),
     "without a shared_memory_region"),
    ({"inputs": [_tensor(data=[1, 2, 3, 4])], "parameters": {"timeout": -1}}, (),
     "microseconds"),
    ({"inputs": [_tensor(data=[1, 2, 3, 4])], "parameters": {"binary_data_output": "yes"}},
     (), "true or false"),
    ({"inputs": [_tensor(data=[1, 2, 3, 4])], "outputs": {"name": "p"}}, (),
     "'outputs' must be a list"),
    ({"inputs": [_tensor(data=[1, 2, 3, 4])], "outputs": [{"name": "p", "parameters": {
        "classification": 3}}]}, (), "classification extension"),
    ({"inputs": [_tensor(data=[1, 2, 3, 4])], "id": 7}, (), "'id' must be a string"),
    ({"inputs": [_tensor(data=[1, 2, 3, 4])], "parameters": []}, (), "JSON object"),
])
def test_malformed_requests_are_refused(header: dict[str, Any], binary: tuple[bytes, ...],
                                        message: str) -> None:
    with pytest.raises(RequestFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _parse(header, *binary)


@pytest.mark.parametrize(("body", "length", "message"), [
    (b'{"inputs": [', None, "not valid JSON"),
    (b"\xff\xfe", None, "not valid JSON"),
    (b"[1, 2]", None, "must be a JSON object"),
    (b'{"inputs": []}', "100", "larger than the body"),
    (b'{"inputs": []}', "ten", "not a byte count"),
    (b'{"inputs": []}', "-3", "not a byte count"),
    (b'{"inputs": []}', "0", "needs its JSON header"),
])
def test_malformed_bodies_and_binary_headers_are_refused(body: bytes, length: str | None,
                                                         message: str) -> None:
    with pytest.raises(RequestFormatError, match=message):
        codec.parse_infer_request(body, length)


@pytest.mark.parametrize(("tensor", "spec", "message"), [
    (_tensor(datatype="INT32", data=[1, 2, 3, 4]), FRAME, "data-type is 'INT32'"),
    (_tensor(datatype="FP99", data=[1, 2, 3, 4]), FRAME, "not a datatype of the protocol"),
    (_tensor(shape=[4], data=[1, 2, 3, 4]), FRAME, r"shape \[4\]"),
    (_tensor(data=[1, 2, 3]), FRAME, "holds 3 values"),
    (_tensor(data=["a", "b", "c", "d"]), FRAME, "not FP32 numbers"),
    (_tensor(data=[True, False, True, False]), FRAME, "not FP32 numbers"),
    (_tensor("counts", "INT32", [1, 3], data=[1.5, 2, 3]), COUNTS, "not INT32 numbers"),
    (_tensor("counts", "INT32", [1, 3], data=[1, 2, 2**40]), COUNTS, "out of the range"),
    (_tensor(parameters={"binary_data_size": 12}), FRAME, "binary_data_size is 12 bytes"),
])
def test_inputs_that_do_not_fit_the_model_are_refused(tensor: dict[str, Any],
                                                      spec: TensorSpec, message: str) -> None:
    binary = (b"\0" * 12,) if "parameters" in tensor else ()
    parsed = _parse({"inputs": [tensor]}, *binary)
    with pytest.raises(InputSpecError, match=message):
        codec.decode_input(parsed.inputs[0], spec)


def test_ragged_json_data_is_malformed() -> None:
    parsed = _parse({"inputs": [_tensor(data=[[1, 2], [3]])]})
    with pytest.raises(RequestFormatError, match="not a regular array"):
        codec.decode_input(parsed.inputs[0], FRAME)


def test_responses_carry_json_binary_and_shared_memory_outputs() -> None:
    probs = np.array([[0.1, 0.2, 0.7]], dtype=np.float32)
    counts = np.array([[1, 2, 3]], dtype=np.int32)
    probs_spec = TensorSpec(name="probs", dtype="float32", shape=(1, 3))
    header, buffers, copied = codec.encode_infer_response(
        {"model_name": "m", "model_version": "1", "id": "x"},
        [codec.EncodedOutput(probs_spec, probs),
         codec.EncodedOutput(COUNTS, counts, binary=True),
         codec.EncodedOutput(probs_spec, probs, shm=codec.ShmRef("out", 4, 12))])
    doc = json.loads(header)
    assert doc["model_name"] == "m" and doc["id"] == "x"
    as_json, as_binary, in_region = doc["outputs"]
    assert np.array_equal(np.array(as_json["data"], np.float32).reshape(1, 3), probs)
    assert as_json["datatype"] == "FP32" and as_json["shape"] == [1, 3]
    assert as_binary["parameters"] == {"binary_data_size": 12} and "data" not in as_binary
    assert bytes(buffers[0]) == counts.tobytes() and len(buffers) == 1
    assert in_region["parameters"] == {"shared_memory_region": "out",
                                       "shared_memory_offset": 4,
                                       "shared_memory_byte_size": 12}
    assert "data" not in in_region
    assert copied == probs.nbytes  # only the JSON output was copied


def test_datatypes_of_every_model_dtype() -> None:
    assert [codec.datatype_of(d) for d in ("float32", "float16", "int8", "uint8", "int32",
                                           "int64")] == \
        ["FP32", "FP16", "INT8", "UINT8", "INT32", "INT64"]
