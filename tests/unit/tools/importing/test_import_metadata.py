"""``models import`` metadata: labels, pre- and post-processing, from flags and a YAML file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from foreign_neo import COLOUR_LABELS, colour_reference, neo_tarball
from import_support import run_import, snapshot

from agent.core.model_layout import GOLDEN, TESTSET, read_model_info
from agent.tools.importing.errors import ImportMetadataError, ImportTestsetError

IMAGE_FLAGS = {"layout": "NCHW", "size": "8x8", "mean": "0.5,0.5,0.5", "std": "0.25,0.25,0.25",
               "scale": 1 / 255, "channel_order": "RGB", "softmax": False, "top_k": 2,
               "scores_output": "probs", "description": "colour of a picture"}


@pytest.fixture(scope="module")
def colour(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colour classifier as Neo delivers it for ml_c5, with a synset.txt beside it."""
    out = tmp_path_factory.mktemp("colour")
    neo_tarball(out, "colour", "ml_c5")
    (out / "synset.txt").write_text("\n".join(COLOUR_LABELS) + "\n\n")
    return out


def _refused(sources: list[Path], tmp_path: Path, *needles: str, **kwargs: object) -> str:
    before = snapshot(tmp_path)
    with pytest.raises(ImportMetadataError) as caught:
        run_import(sources, tmp_path / "out", **kwargs)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message
    assert snapshot(tmp_path) == before
    return message


def test_labels_and_image_preprocessing_from_flags(colour: Path, tmp_path: Path) -> None:
    result = run_import([colour / "model-ml_c5.tar.gz"], tmp_path / "colour", name="colour",
                        metadata={"labels": colour / "synset.txt", **IMAGE_FLAGS})
    info = read_model_info(tmp_path / "colour")
    assert info == result.info
    meta = info.metadata
    assert meta is not None and meta.labels == COLOUR_LABELS
    assert meta.description == "colour of a picture"
    pre, post = meta.preprocess, meta.postprocess
    assert pre is not None and post is not None
    assert (pre.layout, pre.size, pre.channel_order) == ("NCHW", (8, 8), "RGB")
    assert (pre.mean, pre.std, pre.scale) == ((0.5,) * 3, (0.25,) * 3, 1 / 255)
    assert (post.output, post.softmax, post.top_k) == ("probs", False, 2)
    with np.load(tmp_path / "colour" / GOLDEN) as golden:
        pixels, probs = golden["in/pixels"], golden["out/probs"]
    assert pixels.shape == (8, 1, 3, 8, 8) and probs.shape == (8, 1, 3)
    for case in range(8):
        np.testing.assert_allclose(probs[case], colour_reference(pixels[case]), atol=1e-6)
    assert "3 labels" in result.summary()


def test_a_metadata_file_with_flags_overriding_it(colour: Path, tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "colours.txt").write_text("r\ng\nb\n")
    meta_file = tmp_path / "colour.yaml"
    meta_file.write_text("name: palette\nversion: 4\ndescription: from the file\n"
                         "labels: labels/colours.txt\n"
                         "preprocess: {layout: NCHW, size: [8, 8], channel_order: BGR}\n"
                         "postprocess: {softmax: true, top_k: 3}\n")
    run_import([colour / "model-ml_c5.tar.gz"], tmp_path / "out", name=None,
               metadata={"file": meta_file, "top_k": 1, "channel_order": "RGB"})
    info = read_model_info(tmp_path / "out")
    assert (info.name, info.version) == ("palette", "4")
    meta = info.metadata
    assert meta is not None and meta.labels == ("r", "g", "b")
    assert meta.description == "from the file"
    assert meta.preprocess is not None and meta.preprocess.channel_order == "RGB"
    assert meta.postprocess is not None
    assert (meta.postprocess.softmax, meta.postprocess.top_k) == (True, 1)


def test_a_metadata_file_with_an_unknown_layout_is_refused(colour: Path, tmp_path: Path) -> None:
    meta_file = tmp_path / "meta.yaml"
    meta_file.write_text("name: colour\npreprocess:\n  layout: NCWH\n")
    _refused([colour / "model-ml_c5.tar.gz"], tmp_path, "meta.yaml: preprocess.layout",
             "'NCHW' or 'NHWC'", name=None, metadata={"file": meta_file})


def test_an_unknown_layout_flag_is_refused(colour: Path, tmp_path: Path) -> None:
    _refused([colour / "model-ml_c5.tar.gz"], tmp_path, "--layout HWC: preprocess.layout",
             metadata={"layout": "HWC"})


def test_labels_that_do_not_match_the_scores_output_are_refused(colour: Path,
                                                                tmp_path: Path) -> None:
    labels = tmp_path / "synset.txt"
    labels.write_text("red\ngreen\nblue\nalpha\n")
    _refused([colour / "model-ml_c5.tar.gz"], tmp_path, f"--labels {labels}",
             "metadata.labels: 4 labels", "probs [1, 3] holds 3 scores",
             metadata={"labels": labels})


def test_a_layout_that_does_not_fit_the_image_input_is_refused(colour: Path,
                                                               tmp_path: Path) -> None:
    _refused([colour / "model-ml_c5.tar.gz"], tmp_path, "--layout NHWC",
             "metadata.preprocess.layout", "8 channel(s)", metadata={"layout": "NHWC"})


def test_an_unknown_key_in_the_metadata_file_is_refused(colour: Path, tmp_path: Path) -> None:
    meta_file = tmp_path / "meta.yaml"
    meta_file.write_text("name: colour\nlables: [a, b, c]\n")
    _refused([colour / "model-ml_c5.tar.gz"], tmp_path, "meta.yaml: lables",
             name=None, metadata={"file": meta_file})


def test_a_malformed_size_flag_is_refused(colour: Path, tmp_path: Path) -> None:
    _refused([colour / "model-ml_c5.tar.gz"], tmp_path, "--size '8-8'", "HEIGHTxWIDTH",
             metadata={"size": "8-8"})


def test_a_name_that_cannot_name_packages_is_refused(colour: Path, tmp_path: Path) -> None:
    _refused([colour / "model-ml_c5.tar.gz"], tmp_path, "--name 'my model/v2'",
             name="my model/v2")


def test_a_labelled_testset_of_a_single_input_model(colour: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, size=(6, 3, 8, 8)).astype(np.uint8)  # cast to float32
    np.savez(tmp_path / "test.npz", x=pixels, y=np.array([0, 1, 2, 0, 1, 2]))
    result = run_import([colour / "model-ml_c5.tar.gz"], tmp_path / "colour",
                        metadata={"labels": colour / "synset.txt"},
                        testset=tmp_path / "test.npz")
    assert (result.testset_cases, result.testset_labelled) == (6, True)
    with np.load(tmp_path / "colour" / TESTSET) as testset:
        assert sorted(testset.files) == ["x", "y"]
        assert testset["x"].dtype == np.float32 and testset["x"].shape == (6, 1, 3, 8, 8)
        assert testset["y"].dtype == np.int64


def test_testset_labels_outside_the_metadata_labels_are_refused(colour: Path,
                                                                tmp_path: Path) -> None:
    np.savez(tmp_path / "test.npz", x=np.zeros((2, 3, 8, 8)), y=np.array([0, 3]))
    before = snapshot(tmp_path)
    with pytest.raises(ImportTestsetError, match=r"test\.npz: array 'y' holds labels from 0 "
                                                 r"to 3, the metadata names 3 classes"):
        run_import([colour / "model-ml_c5.tar.gz"], tmp_path / "out",
                   metadata={"labels": colour / "synset.txt"}, testset=tmp_path / "test.npz")
    assert snapshot(tmp_path) == before
