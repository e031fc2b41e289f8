"""``edge-agent models``: ``import`` from the command line, ``build`` unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from foreign_neo import COLOUR_LABELS, neo_tarball

from agent.cli.main import build_parser, leaf_commands, main
from agent.cli.models import cmd_models_build, cmd_models_import


def test_models_build_parses_as_before() -> None:
    args = build_parser().parse_args(["models", "build", "--out", "x", "--no-cross"])
    assert (args.func, args.out, args.no_cross) == (cmd_models_build, Path("x"), True)
    words = [words for words, _ in leaf_commands(build_parser())]
    assert ("models", "build") in words and ("models", "import") in words


def test_models_import_prints_a_summary_and_json(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    archive = neo_tarball(tmp_path, "colour", "ml_c5")
    labels = tmp_path / "synset.txt"
    labels.write_text("\n".join(COLOUR_LABELS))
    argv = ["models", "import", str(archive), "--out", str(tmp_path / "colour"),
            "--name", "colour", "--version", "2", "--labels", str(labels), "--layout", "NCHW",
            "--size", "8x8", "--no-softmax", "--top-k", "2", "--emulate", "rasp4b",
            "--golden-count", "2"]
    assert build_parser().parse_args(argv).func is cmd_models_import
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "imported colour v2 (label colour-v2)" in text
    assert "dlr/rasp4b-x86_64" in text and "emulated" in text and "Neo ml_c5" in text
    assert "golden:  2 case(s) from dlr-host (dlr/linux_x86_64-x86_64)" in text
    assert main([*argv[:4], str(tmp_path / "again"), *argv[5:], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["name"], doc["version"], doc["label"]) == ("colour", "2", "colour-v2")
    assert [a["path"] for a in doc["artifacts"]] == ["dlr/linux_x86_64-x86_64",
                                                     "dlr/rasp4b-x86_64"]
    assert doc["golden"]["source"] == "dlr-host" and doc["golden"]["cases"] == 2
    assert doc["metadata"]["labels"] == list(COLOUR_LABELS)


def test_a_refused_import_exits_non_zero_naming_the_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = neo_tarball(tmp_path, "colour", "ml_c5")
    code = main(["models", "import", str(archive), "--out", str(tmp_path / "out"),
                 "--name", "colour", "--layout", "NCWH"])
    assert code == 2
    err = capsys.readouterr().err
    assert "ImportMetadataError" in err and "--layout NCWH: preprocess.layout" in err
    assert not (tmp_path / "out").exists()
