"""Sources of ``models import``: archives opened as safely as packages, Neo's layouts."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from foreign_neo import neo_output_files, write_tar_gz
from import_support import run_import, snapshot

from agent.tools.importing.errors import ImportSourceError
from agent.tools.importing.sources import SourceSpec, open_source, parse_source


@pytest.fixture(scope="module")
def neo_files() -> dict[str, bytes]:
    return neo_output_files("fusion", target_device="ml_c5")


def _tar(dest: Path, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for info in members:
            payload = data.get(info.name)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return dest


def _file(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info


def _refused(archive: Path, tmp_path: Path, *needles: str) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(ImportSourceError) as caught:
        run_import([archive], tmp_path / "out")
    message = str(caught.value)
    assert archive.name in message
    for needle in needles:
        assert needle in message
    assert snapshot(tmp_path) == before


def test_a_tarball_member_with_path_traversal_is_refused(neo_files: dict[str, bytes],
                                                         tmp_path: Path) -> None:
    data = {**neo_files, "../evil.so": b"x"}
    archive = _tar(tmp_path / "model-ml_c5.tar.gz",
                   [_file(name, payload) for name, payload in data.items()], data)
    _refused(archive, tmp_path, "'../evil.so'", "traversal")


def test_a_tarball_with_an_absolute_member_is_refused(neo_files: dict[str, bytes],
                                                      tmp_path: Path) -> None:
    data = {"/etc/evil": b"x", **neo_files}
    archive = _tar(tmp_path / "model-ml_c5.tar.gz",
                   [_file(name, payload) for name, payload in data.items()], data)
    _refused(archive, tmp_path, "'/etc/evil'", "absolute path")


def test_a_tarball_with_a_symlink_member_is_refused(neo_files: dict[str, bytes],
                                                    tmp_path: Path) -> None:
    link = tarfile.TarInfo("compiled.params")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    others = {k: v for k, v in neo_files.items() if k != "compiled.params"}
    archive = _tar(tmp_path / "model-ml_c5.tar.gz",
                   [*(_file(n, d) for n, d in others.items()), link], others)
    _refused(archive, tmp_path, "'compiled.params'", "symlink", "/etc/passwd")


def test_a_tarball_with_a_hardlink_member_is_refused(neo_files: dict[str, bytes],
                                                     tmp_path: Path) -> None:
    link = tarfile.TarInfo("libdlr.so")
    link.type, link.linkname = tarfile.LNKTYPE, "compiled.so"
    archive = _tar(tmp_path / "model-ml_c5.tar.gz",
                   [*(_file(n, d) for n, d in neo_files.items()), link], neo_files)
    _refused(archive, tmp_path, "'libdlr.so'", "hardlink")


def test_a_tarball_with_a_device_member_is_refused(neo_files: dict[str, bytes],
                                                   tmp_path: Path) -> None:
    device = tarfile.TarInfo("compiled.meta")
    device.type = tarfile.CHRTYPE
    archive = _tar(tmp_path / "model-ml_c5.tar.gz",
                   [*(_file(n, d) for n, d in neo_files.items() if n != "compiled.meta"),
                    device], neo_files)
    _refused(archive, tmp_path, "'compiled.meta'", "device")


def test_a_truncated_tarball_is_refused(neo_files: dict[str, bytes], tmp_path: Path) -> None:
    whole = write_tar_gz(tmp_path / "whole.tar.gz", neo_files).read_bytes()
    archive = tmp_path / "model-ml_c5.tar.gz"
    archive.write_bytes(whole[: len(whole) // 2])
    (tmp_path / "whole.tar.gz").unlink()
    _refused(archive, tmp_path, "truncated")


def test_a_zip_member_with_path_traversal_is_refused(neo_files: dict[str, bytes],
                                                     tmp_path: Path) -> None:
    archive = tmp_path / "model-ml_c5.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in neo_files.items():
            zipped.writestr(name, data)
        zipped.writestr("../../outside.txt", b"x")
    _refused(archive, tmp_path, "'../../outside.txt'", "traversal")


def test_a_zip_with_a_symlink_member_is_refused(neo_files: dict[str, bytes],
                                                tmp_path: Path) -> None:
    archive = tmp_path / "model-ml_c5.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name, data in neo_files.items():
            zipped.writestr(name, data)
        link = zipfile.ZipInfo("libdlr.so")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zipped.writestr(link, "/usr/lib/libdlr.so")
    _refused(archive, tmp_path, "'libdlr.so'", "symlink")


def test_a_zip_with_a_duplicate_member_is_refused(neo_files: dict[str, bytes],
                                                  tmp_path: Path) -> None:
    archive = tmp_path / "model-ml_c5.zip"
    with zipfile.ZipFile(archive, "w") as zipped, pytest.warns(UserWarning):
        for name, data in neo_files.items():
            zipped.writestr(name, data)
        zipped.writestr("compiled.so", b"second")
    _refused(archive, tmp_path, "'compiled.so'", "duplicate")


def test_a_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "model.pt"
    source.write_bytes(b"torch")
    _refused(source, tmp_path, "not a directory, .tar.gz/.tgz, .zip or .onnx")


def test_tar_dot_slash_names_and_one_top_level_folder_are_neo_layouts(
        neo_files: dict[str, bytes], tmp_path: Path) -> None:
    dotted = {f"./{name}": data for name, data in neo_files.items()}
    root = tarfile.TarInfo(".")
    root.type, root.mode = tarfile.DIRTYPE, 0o755
    flat = _tar(tmp_path / "dotted.tgz",
                [root, *(_file(n, d) for n, d in dotted.items())], dotted)
    opened = open_source(SourceSpec(flat), tmp_path / "work")
    assert sorted(p.name for p in opened.root.iterdir()) == sorted(neo_files)
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as zipped:
        for name, data in neo_files.items():
            zipped.writestr(f"model-ml_c5/{name}", data)
        zipped.writestr("__MACOSX/._compiled.so", b"resource fork")
    opened = open_source(SourceSpec(nested), tmp_path / "work")
    assert opened.kind == "neo" and opened.root.name == "model-ml_c5"
    assert sorted(p.name for p in opened.root.iterdir()) == sorted(neo_files)


def test_a_source_may_state_its_target_with_a_prefix(tmp_path: Path) -> None:
    assert parse_source("rasp4b=out/model.tar.gz") == SourceSpec(Path("out/model.tar.gz"),
                                                                 "rasp4b")
    assert parse_source("out/model.tar.gz") == SourceSpec(Path("out/model.tar.gz"))
    odd = tmp_path / "a=b.tar.gz"
    odd.write_bytes(b"")
    assert parse_source(str(odd)) == SourceSpec(odd)  # an existing path stays a path


def test_a_gzip_bomb_is_refused_by_the_compression_ratio(tmp_path: Path) -> None:
    # 80 MiB of zeros compress about 1000:1: past the 64 MiB floor the 200:1 ratio stops it,
    # long before the 1 GiB size cap would.
    archive = tmp_path / "model-ml_c5.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = _file("compiled.so", b"")
        info.size = 80 * 1024 * 1024
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert archive.stat().st_size < 1024 * 1024
    _refused(archive, tmp_path, "max_ratio")
