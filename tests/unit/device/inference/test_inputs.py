"""A user's input file read into a model's tensors: every accepted form, and every way a
file can fail to fit, each with the message that names the file, the input and its spec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.core.errors import ConfigError, InputSpecError
from agent.core.model_layout import TensorSpec
from agent.core.model_metadata import ModelMetadata, Preprocess
from agent.device.inference.inputs import fit_input, fit_samples, read_inputs

FRAME = TensorSpec(name="sensor_frame", dtype="float32", shape=(1, 6))
COUNTS = TensorSpec(name="event_counts", dtype="int32", shape=(1, 3))
PIXELS = TensorSpec(name="pixels", dtype="uint8", shape=(1, 4, 4, 3))
FUSION = (FRAME, COUNTS)


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _json(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


# ---- accepted forms --------------------------------------------------------------------


def test_npz_by_input_name_gives_tensors_in_spec_order(tmp_path: Path) -> None:
    path = _npz(tmp_path / "in.npz", event_counts=np.array([[1, 2, 3]], np.int32),
                sensor_frame=np.arange(6, dtype=np.float32).reshape(1, 6))
    frame, counts = read_inputs(path, FUSION)
    assert frame.dtype == np.float32 and frame.shape == (1, 6) and frame[0, 5] == 5.0
    assert counts.dtype == np.int32 and counts.tolist() == [[1, 2, 3]]
    assert frame.flags.c_contiguous and counts.flags.c_contiguous


def test_npz_x_stands_for_the_only_input(tmp_path: Path) -> None:
    (frame,) = read_inputs(_npz(tmp_path / "in.npz", x=np.ones(6)), (FRAME,))
    assert frame.shape == (1, 6) and frame.dtype == np.float32


def test_npy_feeds_a_single_input_model_and_a_batch_of_one_is_added(tmp_path: Path) -> None:
    np.save(tmp_path / "in.npy", np.arange(6, dtype=np.float64))
    (frame,) = read_inputs(tmp_path / "in.npy", (FRAME,))
    assert frame.shape == (1, 6) and frame.dtype == np.float32
    assert frame.tolist() == [[0, 1, 2, 3, 4, 5]]


def test_a_leading_batch_of_one_is_dropped_when_the_input_has_none() -> None:
    spec = TensorSpec(name="v", dtype="float32", shape=(6,))
    assert fit_input(np.ones((1, 6)), spec, where="f").shape == (6,)


def test_json_object_by_name_and_bare_list(tmp_path: Path) -> None:
    path = _json(tmp_path / "in.json", {"sensor_frame": [[0, 1, 2, 3, 4, 5.5]],
                                        "event_counts": [1, 2, 3]})
    frame, counts = read_inputs(path, FUSION)
    assert frame[0, 5] == np.float32(5.5) and counts.tolist() == [[1, 2, 3]]
    (only,) = read_inputs(_json(tmp_path / "bare.json", [1, 2, 3]), (COUNTS,))
    assert only.tolist() == [[1, 2, 3]]


def test_an_integer_valued_float_fits_an_integer_input() -> None:
    assert fit_input([[1.0, 2.0, 3.0]], COUNTS, where="f").tolist() == [[1, 2, 3]]


# ---- bad files, each its own message ----------------------------------------------------


def test_missing_input(tmp_path: Path) -> None:
    path = _npz(tmp_path / "in.npz", sensor_frame=np.zeros((1, 6), np.float32))
    with pytest.raises(InputSpecError) as err:
        read_inputs(path, FUSION)
    assert str(err.value) == f"{path}: missing input(s) 'event_counts' (int32 [1, 3])"


def test_unknown_input_name(tmp_path: Path) -> None:
    path = _json(tmp_path / "in.json", {"sensor_frame": [0] * 6, "event_counts": [1, 2, 3],
                                        "speed": [1]})
    with pytest.raises(InputSpecError) as err:
        read_inputs(path, FUSION)
    assert str(err.value) == (f"{path}: no input named 'speed'; the model's inputs are "
                              "'sensor_frame' (float32 [1, 6]), 'event_counts' (int32 [1, 3])")


def test_wrong_shape(tmp_path: Path) -> None:
    path = _npz(tmp_path / "in.npz", sensor_frame=np.zeros((2, 6), np.float32),
                event_counts=np.zeros((1, 3), np.int32))
    with pytest.raises(InputSpecError) as err:
        read_inputs(path, FUSION)
    assert str(err.value) == (f"{path}: input 'sensor_frame' (float32 [1, 6]): "
                              "got shape [2, 6]")


def test_same_element_count_in_another_shape_is_refused() -> None:
    with pytest.raises(InputSpecError, match=r"'sensor_frame' \(float32 \[1, 6\]\): got shape "
                                             r"\[2, 3\]"):
        fit_input(np.zeros((2, 3)), FRAME, where="in.npy")


def test_value_outside_uint8_range() -> None:
    spec = TensorSpec(name="img", dtype="uint8", shape=(2,))
    with pytest.raises(InputSpecError) as err:
        fit_input([10, 300], spec, where="in.json")
    assert str(err.value) == ("in.json: input 'img' (uint8 [2]): value 300 is outside "
                              "uint8's range [0, 255]")


def test_negative_value_for_uint8() -> None:
    spec = TensorSpec(name="img", dtype="uint8", shape=(1,))
    with pytest.raises(InputSpecError, match=r"value -1 is outside uint8's range \[0, 255\]"):
        fit_input([-1], spec, where="in.json")


def test_fraction_for_int32() -> None:
    with pytest.raises(InputSpecError) as err:
        fit_input([[1, 1.5, 2]], COUNTS, where="in.json")
    assert str(err.value) == ("in.json: input 'event_counts' (int32 [1, 3]): value 1.5 is not "
                              "an integer, as int32 needs")


def test_nan_for_int32() -> None:
    with pytest.raises(InputSpecError, match="value nan is not an integer, as int32 needs"):
        fit_input([[1, float("nan"), 2]], COUNTS, where="in.npy")


def test_float_overflowing_float32() -> None:
    with pytest.raises(InputSpecError, match=r"value 1e\+39 does not fit float32"):
        fit_input([[0, 0, 0, 0, 0, 1e39]], FRAME, where="in.json")


def test_strings_are_not_numbers(tmp_path: Path) -> None:
    path = _json(tmp_path / "in.json", {"event_counts": ["1", "2", "3"],
                                        "sensor_frame": [0] * 6})
    with pytest.raises(InputSpecError, match=r"input 'event_counts' \(int32 \[1, 3\]\): holds "
                                             r"<U1 values, not numbers"):
        read_inputs(path, FUSION)


def test_ragged_json_list(tmp_path: Path) -> None:
    path = _json(tmp_path / "in.json", [[1, 2], [3]])
    with pytest.raises(InputSpecError, match=r"in.json: input 'event_counts' \(int32 \[1, 3\]\): "
                                             "not a rectangular array of numbers"):
        read_inputs(path, (COUNTS,))


def test_npy_for_a_two_input_model(tmp_path: Path) -> None:
    np.save(tmp_path / "in.npy", np.zeros(6))
    with pytest.raises(InputSpecError) as err:
        read_inputs(tmp_path / "in.npy", FUSION)
    assert str(err.value).startswith(f"{tmp_path / 'in.npy'}: a .npy file holds one array, "
                                     "the model takes 2: 'sensor_frame' (float32 [1, 6])")


def test_bare_json_list_for_a_two_input_model(tmp_path: Path) -> None:
    with pytest.raises(InputSpecError, match="a bare JSON list feeds one input, the model "
                                             "takes 2"):
        read_inputs(_json(tmp_path / "in.json", [1, 2, 3]), FUSION)


def test_json_string_document(tmp_path: Path) -> None:
    with pytest.raises(InputSpecError, match=r"in\.json: a JSON str; give an object"):
        read_inputs(_json(tmp_path / "in.json", "hello"), (COUNTS,))


def test_invalid_json(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text("{not json")
    with pytest.raises(InputSpecError, match=r"in\.json: not readable JSON"):
        read_inputs(tmp_path / "in.json", (COUNTS,))


def test_corrupt_npz(tmp_path: Path) -> None:
    (tmp_path / "in.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(InputSpecError, match=r"in.npz: not a readable \.npz file"):
        read_inputs(tmp_path / "in.npz", (COUNTS,))


def test_pickled_npy_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "in.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputSpecError, match=r"in.npy: not a readable \.npy file"):
        read_inputs(tmp_path / "in.npy", (COUNTS,))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.npz: no such file"):
        read_inputs(tmp_path / "nope.npz", (COUNTS,))


def test_unknown_suffix(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("1,2,3")
    with pytest.raises(ConfigError, match=r"in.csv: unknown input file type '.csv' \(accepted: "
                                          r"\.npy, \.npz, \.json, \.png"):
        read_inputs(tmp_path / "in.csv", (COUNTS,))


def test_image_for_a_model_without_image_metadata(tmp_path: Path) -> None:
    (tmp_path / "in.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputSpecError, match=r"in\.png: an image, but the model's metadata "
                                             "describes no image pre-processing"):
        read_inputs(tmp_path / "in.png", (PIXELS,), metadata=ModelMetadata(labels=("a",)))


def test_image_for_a_model_with_another_input_besides(tmp_path: Path) -> None:
    meta = ModelMetadata(preprocess=Preprocess(input="pixels", layout="NHWC"))
    (tmp_path / "in.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputSpecError, match=r"in.png: an image feeds only input 'pixels'; the "
                                             r"model also takes 'event_counts' \(int32"):
        read_inputs(tmp_path / "in.png", (PIXELS, COUNTS), metadata=meta)


def test_image_file_that_is_no_image(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    meta = ModelMetadata(preprocess=Preprocess(layout="NHWC"))
    (tmp_path / "in.png").write_bytes(b"not a png at all")
    with pytest.raises(InputSpecError, match=r"in\.png: not an image that can be decoded"):
        read_inputs(tmp_path / "in.png", (PIXELS,), metadata=meta)


def test_image_to_a_uint8_input_is_the_raw_pixels(tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    image_module.fromarray(pixels).save(tmp_path / "in.png")
    meta = ModelMetadata(preprocess=Preprocess(layout="NHWC"))
    (tensor,) = read_inputs(tmp_path / "in.png", (PIXELS,), metadata=meta)
    assert tensor.dtype == np.uint8 and np.array_equal(tensor[0], pixels)


# ---- samples (test sets) ---------------------------------------------------------------


def test_samples_gain_the_batch_dimension_of_their_input() -> None:
    samples = fit_samples(np.arange(12).reshape(2, 6), FRAME, where="testset.npz")
    assert samples.shape == (2, 1, 6) and samples.dtype == np.float32


def test_samples_of_another_shape() -> None:
    with pytest.raises(InputSpecError) as err:
        fit_samples(np.zeros((5, 4)), FRAME, where="testset.npz")
    assert str(err.value) == ("testset.npz: input 'sensor_frame' (float32 [1, 6]): samples of "
                              "shape [4] (5 of them)")
