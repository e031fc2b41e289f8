"""Neo-artifact validation without ``compiled.meta`` (TVM ``export_library`` output, and what
a device unpacks from a package of it): weights are checked against the graph by name even
when the graph alone cannot tell them from inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from foreign_neo import fusion_weights, neo_output_files

from agent.core.errors import ArtifactCorruptError
from agent.device.runtime.dlr.neo_format import validate_artifact
from models.export.tvm_format import params_bytes


def _artifact(dest: Path, files: dict[str, bytes]) -> Path:
    dest.mkdir()
    for name, data in files.items():
        (dest / name).write_bytes(data)
    return dest


def test_without_meta_the_weights_are_told_from_the_inputs_by_the_params(tmp_path: Path) -> None:
    summary = validate_artifact(_artifact(tmp_path / "a", neo_output_files("fusion", meta=False)))
    assert [s.name for s in summary.inputs] == ["sensor_frame", "event_counts"]
    assert sorted(summary.params) == ["fc_bias", "fc_weight"]


def test_without_meta_a_weight_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    files = neo_output_files("fusion", meta=False)
    weights = fusion_weights()
    weights["fc_weight"] = weights["fc_weight"].T.copy()  # [4, 6]; the graph says [6, 4]
    files["compiled.params"] = params_bytes(weights, ["fc_weight", "fc_bias"])
    with pytest.raises(ArtifactCorruptError, match=r"compiled.params: array 'fc_weight' is "
                                                   r"float32\[4, 6\], the graph expects "
                                                   r"float32\[6, 4\]"):
        validate_artifact(_artifact(tmp_path / "a", files))
