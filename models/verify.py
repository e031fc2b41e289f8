"""Check built reference models against each other, with the real runtimes.

Every artifact of a model directory should agree with its ONNX export: host
artifacts are run through the real ``libdlr.so`` (bound with ctypes, so the
``dlr`` package and its phone-home never load), artifacts for other
architectures through their own ``runner`` under qemu-user. ::

    python -m models.verify build/models            # table of every model and artifact
    python -m models.verify --once ARTIFACT_DIR     # one inference through libdlr

``--once`` exists for checks that must not share a process with the caller:
it exits 0 on success and 3, with libdlr's error on stderr, when the run fails
(a crashing, faulting or hanging build then only takes down this process).

Host artifacts load through the agent's own DLR backend, so what is verified
here is exactly what a device runs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

import numpy as np

from agent.core.errors import AgentError, BackendUnavailableError
from agent.core.model_layout import ONNX_FILE, TESTSET, list_artifacts, read_model_info
from agent.device.platform.elf import elf_arch, host_arch
from agent.device.runtime.dlr.backend import DlrBackend
from agent.device.runtime.dlr.library import locate_installed
from models.export.neo import RUNNER_BINARY
from models.export.onnx_export import INPUT_NAME
from models.files import load_npz

# qemu-user and the sysroot Debian's cross toolchains install, per emulated architecture.
QEMU: dict[str, tuple[str, ...]] = {
    "aarch64": ("qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"),
    "armv7l": ("qemu-arm", "-L", "/usr/arm-linux-gnueabihf"),
    "x86_64": ("qemu-x86_64", "-L", "/usr/x86_64-linux-gnu"),
}


class VerifyError(Exception):
    """A runtime refused or failed an artifact; the message is the runtime's own."""


def find_libdlr() -> Path | None:
    """The libdlr the agent itself would use, or None where none is installed."""
    try:
        return locate_installed()
    except BackendUnavailableError:
        return None


def host_artifact(model_dir: Path) -> Path:
    """The artifact a model directory offers this machine: native ``linux_*`` first."""
    native = [(not info.target.startswith("linux_"), info.emulated, path.name, path)
              for path, info in list_artifacts(model_dir) if info.arch == host_arch()]
    if not native:
        raise VerifyError(f"{model_dir} has no artifact for {host_arch()}")
    return min(native)[-1]


class DLRArtifact:
    """A host artifact loaded through the agent's own DLR backend (the real libdlr)."""

    def __init__(self, artifact_dir: Path) -> None:
        try:
            self.model = DlrBackend(artifact_dir=artifact_dir)
        except AgentError as err:
            raise VerifyError(str(err)) from err
        self._input = np.zeros(self.model.inputs[0].shape, np.float32)
        (self._output,) = self.model.bind([self._input])

    def backend(self) -> str:
        return self.model.backend

    def input_name(self) -> str:
        return self.model.inputs[0].name

    def output_name(self) -> str:
        return self.model.outputs[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        """One inference of one input row; returns a copy of the output, float32 [1, size]."""
        self._input[...] = np.asarray(x, dtype=np.float32).reshape(self._input.shape)
        try:
            self.model.run()
        except AgentError as err:
            raise VerifyError(str(err)) from err
        return self._output.copy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.run(row) for row in x])

    def close(self) -> None:
        self.model.close()

    def __enter__(self) -> DLRArtifact:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def dlr_predict(artifact_dir: Path, x: np.ndarray) -> np.ndarray:
    with DLRArtifact(artifact_dir) as model:
        return model.predict(x)


def onnx_predict(model_path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rows = [session.run(None, {INPUT_NAME: row.reshape(1, -1)})[0] for row in
            np.ascontiguousarray(x, dtype=np.float32)]
    return np.concatenate(rows)


def emulator_for(arch: str) -> list[str] | None:
    """The command prefix that runs ``arch`` binaries here: none natively, qemu otherwise."""
    if arch == host_arch():
        return []
    command = QEMU.get(arch)
    if command is None or shutil.which(command[0]) is None:
        return None
    return list(command)


def runner_predict(artifact_dir: Path, x: np.ndarray, *, timeout: float = 120) -> np.ndarray:
    """Outputs of the artifact's own ``runner`` (under qemu for a foreign architecture)."""
    arch = elf_arch(artifact_dir / RUNNER_BINARY)
    prefix = emulator_for(arch)
    if prefix is None:
        raise VerifyError(f"no way to run {arch} code here (install {QEMU[arch][0]})")
    with tempfile.TemporaryDirectory() as scratch:
        inputs, outputs = Path(scratch) / "in.f32", Path(scratch) / "out.f32"
        np.ascontiguousarray(x, dtype="<f4").tofile(inputs)
        result = subprocess.run(
            [*prefix, str(artifact_dir / RUNNER_BINARY), str(artifact_dir), str(inputs),
             str(outputs)],
            capture_output=True, text=True, timeout=timeout,
        )
        if result.returncode != 0:
            raise VerifyError(f"runner exited {result.returncode}: {result.stderr.strip()}")
        return np.fromfile(outputs, "<f4").reshape(len(x), -1)


def verify_model_dir(model_dir: Path, *, limit: int | None = None) -> list[str]:
    """One line per artifact: accuracy and worst difference from the ONNX export."""
    info = read_model_info(model_dir)
    test = load_npz(model_dir / TESTSET)
    x, y = test["x"][:limit], test["y"][:limit]
    reference = onnx_predict(model_dir / ONNX_FILE, x) if (model_dir / ONNX_FILE).is_file() \
        else None
    lines = []
    has_libdlr = find_libdlr() is not None
    if reference is not None:
        lines.append(f"{model_dir.name}  onnx  accuracy {(reference.argmax(1) == y).mean():.4f}")
    for artifact, meta in list_artifacts(model_dir):
        label = f"{model_dir.name}  {artifact.name}"
        if info.variant in ("crash", "segfault", "hang"):
            lines.append(f"{label}  skipped (deliberately broken: {info.variant})")
            continue
        try:
            if meta.arch == host_arch() and has_libdlr:
                out, how = dlr_predict(artifact, x), "libdlr"
            else:
                out, how = runner_predict(artifact, x), "runner"
        except VerifyError as err:
            lines.append(f"{label}  FAILED: {err}")
            continue
        line = f"{label}  {how}  accuracy {(out.argmax(1) == y).mean():.4f}"
        if reference is not None:
            line += f"  max|diff| vs onnx {np.abs(out - reference).max():.2e}"
        lines.append(line)
    return lines


def _run_once(artifact_dir: Path) -> int:
    try:
        with DLRArtifact(artifact_dir) as model:
            out = model.run(np.zeros((1, 64), np.float32))
    except VerifyError as err:
        print(err, file=sys.stderr)
        return 3
    print(" ".join(f"{value:.6g}" for value in out.ravel()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.verify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path,
                        help="model directories, or a build output holding them")
    parser.add_argument("--once", type=Path, metavar="ARTIFACT_DIR",
                        help="run one inference of a host artifact through libdlr and exit")
    parser.add_argument("--limit", type=int, default=None, help="test inputs per artifact")
    args = parser.parse_args(argv)
    if args.once:
        return _run_once(args.once)
    roots: list[Path] = args.paths or [Path("build/models")]
    model_dirs = []
    for root in roots:
        if (root / "model.json").is_file():
            model_dirs.append(root)
        else:
            model_dirs += sorted(p for p in root.iterdir() if (p / "model.json").is_file())
    for model_dir in model_dirs:
        for line in verify_model_dir(model_dir, limit=args.limit):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
