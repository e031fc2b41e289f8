"""``edge-agent predict`` on user models: an image through the colour classifier's metadata,
both fusion inputs on DLR and ONNX, a signed package verified first, and bad inputs that
exit 2 with the typed error and write nothing. Real libdlr and ONNX Runtime throughout."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from foreign_neo import colour_reference, fusion_reference, neo_tarball
from model_dirs import HOST_TARGET, colour_model_dir, fusion_model_dir

from agent.cli.main import main
from agent.device.platform.elf import host_arch
from agent.tools.packaging.build import build_package
from agent.tools.packaging.keys import keys_generate
from agent.wire.signing import Signer

Image = pytest.importorskip("PIL.Image")

ARTIFACT = f"{HOST_TARGET}-{host_arch()}"
FRAME = np.array([[0.5, -1.0, 2.0, 0.25, 3.0, -0.75]], np.float32)
COUNTS = np.array([[4, 0, 7]], np.int32)


def _predict(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = main(["predict", *args])
    captured = capsys.readouterr()
    report = json.loads(captured.out) if code == 0 else {}
    return code, report, captured.err


def _red_png(path: Path) -> Path:
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[..., 0] = 230
    pixels[..., 1:] = 20
    Image.fromarray(pixels).save(path)
    return path


def _fusion_npz(path: Path) -> Path:
    np.savez(path, sensor_frame=FRAME, event_counts=COUNTS)
    return path


def _values(report: dict[str, Any], name: str) -> np.ndarray:
    entry = next(out for out in report["outputs"] if out["name"] == name)
    return np.array(entry["values"], dtype=entry["dtype"])


def test_png_through_the_colour_model_prints_top_k_with_labels(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = colour_model_dir(tmp_path / "colour")
    code, report, err = _predict(capsys, "--model", str(model), "--input",
                                 str(_red_png(tmp_path / "red.png")))
    assert code == 0, err
    assert (report["label"], report["backend"], report["scores_output"]) == (
        "colour-v1", "dlr", "probs")
    assert [p["label"] for p in report["top_k"]] == ["red", "green", "blue"]
    assert [p["index"] for p in report["top_k"]] == [0, 1, 2]
    # The image pre-processed as the metadata says (NCHW, scale 1/255), then the numpy model.
    pixels = np.zeros((1, 3, 8, 8), np.float32)
    pixels[0, 0], pixels[0, 1:] = np.float32(230) / 255, np.float32(20) / 255
    np.testing.assert_allclose(_values(report, "probs"), colour_reference(pixels), atol=1e-6)
    assert report["top_k"][0]["score"] == pytest.approx(float(colour_reference(pixels)[0, 0]))


@pytest.mark.parametrize("backend", ["dlr", "onnx"])
def test_fusion_inputs_by_name_match_numpy(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           backend: str) -> None:
    model = fusion_model_dir(tmp_path / "fusion", onnx=backend == "onnx")
    code, report, err = _predict(capsys, "--model", str(model), "--backend", backend,
                                 "--input", str(_fusion_npz(tmp_path / "in.npz")), "--json")
    assert code == 0, err
    expected = fusion_reference(FRAME, COUNTS)
    assert report["backend"] == backend and "top_k" not in report
    assert [(o["name"], o["dtype"], o["shape"]) for o in report["outputs"]] == [
        ("Identity:0", "float32", [1, 4]), ("Identity_1:0", "int32", [1, 1])]
    np.testing.assert_allclose(_values(report, "Identity:0"), expected["Identity:0"],
                               rtol=0, atol=1e-5)
    assert np.array_equal(_values(report, "Identity_1:0"), expected["Identity_1:0"])


def test_json_input_on_an_artifact_directory_and_output_npz(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = fusion_model_dir(tmp_path / "fusion")
    (tmp_path / "in.json").write_text(json.dumps(
        {"sensor_frame": FRAME[0].tolist(), "event_counts": COUNTS.tolist()}))
    out = tmp_path / "out" / "result.npz"
    code, report, err = _predict(capsys, "--model", str(model / "dlr" / ARTIFACT), "--input",
                                 str(tmp_path / "in.json"), "--output", str(out), "--top-k", "2")
    assert code == 0, err
    assert report["written"] == str(out) and "values" not in report["outputs"][0]
    expected = fusion_reference(FRAME, COUNTS)
    with np.load(out) as saved:
        assert sorted(saved.files) == ["Identity:0", "Identity_1:0"]
        np.testing.assert_allclose(saved["Identity:0"], expected["Identity:0"], atol=1e-5)
        assert saved["Identity_1:0"].dtype == np.int32
    # --top-k asks for ranking even without metadata: the first output, unlabelled.
    best = np.argsort(-expected["Identity:0"][0], kind="stable")[:2].tolist()
    assert [(p["index"], p["label"]) for p in report["top_k"]] == [(i, None) for i in best]


def test_a_signed_package_is_verified_then_predicts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = colour_model_dir(tmp_path / "colour", onnx=True)  # ONNX twin: golden vectors
    keys = keys_generate(tmp_path / "keys", "ctl-1")
    package = build_package(model, ARTIFACT, out_dir=tmp_path / "packages", version=1,
                            signer=Signer.from_file(keys.private, key_id="ctl-1"))
    png = str(_red_png(tmp_path / "red.png"))
    code, report, err = _predict(capsys, "--model", str(package), "--input", png,
                                 "--trusted-key", f"ctl-1={keys.public}", "--json")
    assert code == 0, err
    assert report["label"] == "colour-v1" and report["backend"] == "dlr"
    assert report["top_k"][0]["label"] == "red"

    code, _, err = _predict(capsys, "--model", str(package), "--input", png)
    assert code == 2
    assert "needs --trusted-key ID=KEY" in err and "ConfigError" in err

    stranger = keys_generate(tmp_path / "keys", "other")
    code, _, err = _predict(capsys, "--model", str(package), "--input", png,
                            "--trusted-key", f"other={stranger.public}")
    assert code == 2 and "UnknownPackageKeyError" in err


def test_a_neo_tarball_is_no_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = keys_generate(tmp_path / "keys", "ctl-1")
    tarball = neo_tarball(tmp_path, "fusion", "ml_c5")
    code, _, err = _predict(capsys, "--model", str(tarball), "--input",
                            str(_fusion_npz(tmp_path / "in.npz")),
                            "--trusted-key", f"ctl-1={keys.public}")
    assert code == 2
    assert "PackageFormatError" in err and "is not a signed model package" in err
    assert "edge-agent models import" in err


def test_wrong_input_exits_2_names_the_input_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = fusion_model_dir(tmp_path / "fusion")
    np.savez(tmp_path / "in.npz", sensor_frame=FRAME, event_counts=np.array([[1, 300.5, 2]]))
    out = tmp_path / "out.npz"
    code, _, err = _predict(capsys, "--model", str(model), "--input", str(tmp_path / "in.npz"),
                            "--output", str(out))
    assert code == 2 and not out.exists()
    assert err.strip() == (f"edge-agent: InputSpecError: {tmp_path / 'in.npz'}: input "
                           "'event_counts' (int32 [1, 3]): value 300.5 is not an integer, as "
                           "int32 needs")


def test_output_that_is_no_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = fusion_model_dir(tmp_path / "fusion")
    code, _, err = _predict(capsys, "--model", str(model), "--input",
                            str(_fusion_npz(tmp_path / "in.npz")), "--output",
                            str(tmp_path / "out.json"))
    assert code == 2 and not (tmp_path / "out.json").exists()
    assert "the outputs are written as .npz" in err


def test_image_without_pillow_names_the_images_extra(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = colour_model_dir(tmp_path / "colour")
    png = _red_png(tmp_path / "red.png")
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now fails
    code, _, err = _predict(capsys, "--model", str(model), "--input", str(png))
    assert code == 2
    assert err.strip() == ("edge-agent predict needs the \"images\" extra: "
                           "pip install 'edge-inference-agent[images]'")
