"""Model directories of the foreign-topology ``fusion`` model (:mod:`foreign_neo`), written
by hand in the project's layout, as an import of SageMaker Neo outputs leaves them:

    <dest>/model.json          ModelInfo (any name and version), golden: source "user"
    <dest>/dlr/<target>-<arch>/ compiled.so, compiled.params, compiled_model.json,
                               compiled.meta (real Neo-format files) and artifact.info
    <dest>/golden.npz          in/<input> and out/<output> [N, ...], outputs by numpy
                               (:func:`foreign_neo.fusion_reference`)
    <dest>/testset.npz         one array per input name, no labels (optional)

No ONNX export: the packages' golden vectors come from ``golden.npz``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
from foreign_neo import FUSION_INPUTS, FUSION_OUTPUTS, fusion_reference, neo_output_files

from agent.core.model_layout import (
    ARTIFACT_INFO,
    GOLDEN,
    GOLDEN_INPUT_PREFIX,
    GOLDEN_OUTPUT_PREFIX,
    MODEL_INFO,
    TESTSET,
    ArtifactInfo,
    GoldenInfo,
    ModelInfo,
    TensorSpec,
)
from agent.device.platform.targets import NEO_TARGETS

GOLDEN_CASES = 4


def fusion_inputs(count: int, seed: int = 7) -> dict[str, np.ndarray]:
    """``count`` cases of the fusion model's inputs, by input name, each ``[count, 1, n]``."""
    rng = np.random.default_rng(seed)
    return {"sensor_frame": rng.standard_normal((count, 1, 6)).astype(np.float32),
            "event_counts": rng.integers(0, 10, size=(count, 1, 3), dtype=np.int32)}


def write_fusion_model_dir(dest: Path, builds: Sequence[str], *, name: str = "fusion",
                           version: int = 1, emulated: Collection[str] = (),
                           testset: bool = True) -> Path:
    """``dest`` as a model directory of ``name`` v``version`` with one DLR artifact per
    ``builds`` entry (``<target>-<arch>``; those in ``emulated`` are x86_64 code built on
    behalf of an emulated board)."""
    specs = {"inputs": [TensorSpec(name=n, dtype=d, shape=s) for n, d, s in FUSION_INPUTS],
             "outputs": [TensorSpec(name=n, dtype=d, shape=s) for n, d, s in FUSION_OUTPUTS]}
    info = ModelInfo(name=name, version=str(version), **specs,
                     golden=GoldenInfo(source="user", tolerance=1e-4))
    dest.mkdir(parents=True)
    (dest / MODEL_INFO).write_text(info.model_dump_json(indent=2))
    for build in builds:
        target, arch = build.split("-", 1)
        folder = dest / "dlr" / build
        folder.mkdir(parents=True)
        for file_name, data in neo_output_files("fusion", arch=arch,
                                                target_device=target).items():
            (folder / file_name).write_bytes(data)
        artifact = ArtifactInfo(target=target, arch=arch, emulated=build in emulated,
                                jetpack=NEO_TARGETS[target].jetpack,
                                compiler=f"{arch} gcc", neo_target=target)
        (folder / ARTIFACT_INFO).write_text(artifact.model_dump_json(indent=2))
    inputs = fusion_inputs(GOLDEN_CASES)
    outputs = [fusion_reference(inputs["sensor_frame"][i], inputs["event_counts"][i])
               for i in range(GOLDEN_CASES)]
    arrays = {GOLDEN_INPUT_PREFIX + key: value for key, value in inputs.items()}
    arrays |= {GOLDEN_OUTPUT_PREFIX + out: np.stack([case[out] for case in outputs])
               for out, _, _ in FUSION_OUTPUTS}
    np.savez(dest / GOLDEN, **arrays)
    if testset:
        np.savez(dest / TESTSET, **fusion_inputs(16, seed=11))
    return dest
