"""SageMaker Neo outputs of models the reference builder never makes, for import tests.

Each builder writes what a Neo compilation job leaves in S3, ``model-<target>.tar.gz``
holding ``compiled.so`` (real C kernels with TVM's packed-call ABI, built by the host gcc or
a Debian cross gcc), ``compiled_model.json``, ``compiled.params`` and ``compiled.meta`` at
the archive's top level, so the real ``libdlr.so`` runs them. Each model also has a numpy
reference (:func:`fusion_reference`, :func:`colour_reference`) the tests compare against,
computed independently of any artifact.

``fusion``: two inputs with TensorFlow-style names, one of them int32, two outputs, one
int32 — the foreign-topology case::

    sensor_frame float32 [1, 6] ─┐
    event_counts int32   [1, 3] ─┴─ Identity:0   float32 [1, 4] = frame @ W + b + 0.5 * sum(counts)
    event_counts ────────────────── Identity_1:0 int32   [1, 1] = 2 * sum(counts) + 1

``colour``: an image classifier, ``pixels`` float32 [1, 3, 8, 8] (NCHW) to ``probs``
float32 [1, 3], the softmax of each channel's mean times 4: a red picture is class 0.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from models.export.kernels import ABI_HEADER
from models.export.tvm_format import params_bytes

COMPILERS = {"x86_64": "gcc", "aarch64": "aarch64-linux-gnu-gcc",
             "armv7l": "arm-linux-gnueabihf-gcc"}
FUSION_INPUTS = (("sensor_frame", "float32", (1, 6)), ("event_counts", "int32", (1, 3)))
FUSION_OUTPUTS = (("Identity:0", "float32", (1, 4)), ("Identity_1:0", "int32", (1, 1)))
COLOUR_LABELS = ("red", "green", "blue")

_RNG_SEED = 20240607
_PRELUDE = ABI_HEADER + """
#include <math.h>
#define EXPORT __attribute__((visibility("default")))
EXPORT void* __tvm_module_ctx = NULL;
static inline void* data_of(TVMValue* args, int i) {
  const DLTensor* t = (const DLTensor*)args[i].v_handle;
  return (char*)t->data + t->byte_offset;
}
"""
_FUSION_C = _PRELUDE + """
EXPORT int32_t fused_dense_add_count(TVMValue* args, int32_t* codes, int32_t n, TVMValue* r,
                                     int32_t* rc, void* h) {
  (void)codes; (void)r; (void)rc; (void)h;
  if (n != 5) return -1;
  const float* x = data_of(args, 0);
  const int32_t* c = data_of(args, 1);
  const float* w = data_of(args, 2);
  const float* b = data_of(args, 3);
  float* y = data_of(args, 4);
  float extra = 0.5f * (float)(c[0] + c[1] + c[2]);
  for (int j = 0; j < 4; ++j) {
    float acc = b[j];
    for (int k = 0; k < 6; ++k) acc += x[k] * w[k * 4 + j];
    y[j] = acc + extra;
  }
  return 0;
}
EXPORT int32_t fused_sum_scale(TVMValue* args, int32_t* codes, int32_t n, TVMValue* r,
                               int32_t* rc, void* h) {
  (void)codes; (void)r; (void)rc; (void)h;
  if (n != 2) return -1;
  const int32_t* c = data_of(args, 0);
  int32_t* y = data_of(args, 1);
  y[0] = 2 * (c[0] + c[1] + c[2]) + 1;
  return 0;
}
"""
_COLOUR_C = _PRELUDE + """
EXPORT int32_t fused_mean_softmax(TVMValue* args, int32_t* codes, int32_t n, TVMValue* r,
                                  int32_t* rc, void* h) {
  (void)codes; (void)r; (void)rc; (void)h;
  if (n != 2) return -1;
  const float* x = data_of(args, 0);
  float* y = data_of(args, 1);
  float s[3], top = -1e30f, total = 0.0f;
  for (int ch = 0; ch < 3; ++ch) {
    float acc = 0.0f;
    for (int i = 0; i < 64; ++i) acc += x[ch * 64 + i];
    s[ch] = 4.0f * acc / 64.0f;
    top = s[ch] > top ? s[ch] : top;
  }
  for (int ch = 0; ch < 3; ++ch) { s[ch] = expf(s[ch] - top); total += s[ch]; }
  for (int ch = 0; ch < 3; ++ch) y[ch] = s[ch] / total;
  return 0;
}
"""


def fusion_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(_RNG_SEED)
    return {"fc_weight": rng.standard_normal((6, 4)).astype(np.float32),
            "fc_bias": rng.standard_normal(4).astype(np.float32)}


def fusion_reference(frame: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """The fusion model's outputs, by numpy."""
    weights = fusion_weights()
    frame32 = frame.astype(np.float32).reshape(1, 6)
    total = int(counts.astype(np.int64).sum())
    scores = frame32 @ weights["fc_weight"] + weights["fc_bias"] + np.float32(0.5 * total)
    return {"Identity:0": scores.astype(np.float32),
            "Identity_1:0": np.array([[2 * total + 1]], dtype=np.int32)}


def colour_reference(pixels: np.ndarray) -> np.ndarray:
    """The colour model's ``probs`` for a float32 [1, 3, 8, 8] input, by numpy."""
    means = 4.0 * pixels.reshape(3, 64).astype(np.float64).mean(axis=1)
    exp = np.exp(means - means.max())
    return (exp / exp.sum()).astype(np.float32).reshape(1, 3)


def _graph(inputs: list[tuple[str, str, tuple[int, ...]]],
           params: list[tuple[str, str, tuple[int, ...]]],
           kernels: list[tuple[str, list[str], tuple[str, str, tuple[int, ...]]]],
           heads: list[str]) -> str:
    entries = [*inputs, *params, *(out for _, _, out in kernels)]
    index = {name: i for i, (name, _, _) in enumerate(entries)}
    nodes: list[dict[str, object]] = [{"op": "null", "name": name, "inputs": []}
                                      for name, _, _ in [*inputs, *params]]
    for func, args, (out_name, _, _) in kernels:
        nodes.append({"op": "tvm_op", "name": out_name,
                      "attrs": {"func_name": func, "num_inputs": str(len(args)),
                                "num_outputs": "1", "flatten_data": "0"},
                      "inputs": [[index[a], 0, 0] for a in args]})
    return json.dumps({
        "nodes": nodes, "arg_nodes": list(range(len(inputs) + len(params))),
        "heads": [[index[h], 0, 0] for h in heads],
        "attrs": {"dltype": ["list_str", [d for _, d, _ in entries]],
                  "storage_id": ["list_int", list(range(len(entries)))],
                  "shape": ["list_shape", [list(s) for _, _, s in entries]]},
        "node_row_ptr": list(range(len(entries) + 1))}, indent=1)


def _meta(target_device: str | None, inputs: list[tuple[str, str, tuple[int, ...]]],
          outputs: list[tuple[str, str, tuple[int, ...]]]) -> str:
    doc: dict[str, object] = {
        "Compilation": {"CreatedTime": 1717770000.0},
        "Model": {"Inputs": [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in inputs],
                  "Outputs": [{"name": n, "dtype": d, "shape": list(s)} for n, d, s in outputs]}}
    if target_device is not None:
        doc["Requirements"] = {"TargetDevice": target_device.upper(),
                               "TargetDeviceType": "cpu"}
    return json.dumps(doc, indent=1)


def compile_so(source: str, arch: str, dest: Path) -> None:
    """Build ``source`` into ``dest`` for ``arch`` (host gcc or Debian's cross gcc)."""
    compiler = COMPILERS[arch]
    if shutil.which(compiler) is None:
        raise FileNotFoundError(f"{compiler} is not installed (apt-get install "
                                f"gcc-{compiler.removesuffix('-gcc')})")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "k.c").write_text(source)
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "k.c",
                        "-o", "compiled.so", "-lm"], cwd=tmp, check=True, capture_output=True)
        shutil.copyfile(Path(tmp) / "compiled.so", dest)


def neo_output_files(model: str, *, arch: str = "x86_64", target_device: str | None = None,
                     meta: bool = True) -> dict[str, bytes]:
    """The files of one Neo compilation of ``model`` ("fusion" or "colour"), by name."""
    if model == "fusion":
        inputs = list(FUSION_INPUTS)
        params = [("fc_weight", "float32", (6, 4)), ("fc_bias", "float32", (4,))]
        kernels = [("fused_dense_add_count",
                    ["sensor_frame", "event_counts", "fc_weight", "fc_bias"],
                    ("fused_dense_add_count_out", "float32", (1, 4))),
                   ("fused_sum_scale", ["event_counts"], ("fused_sum_scale_out", "int32", (1, 1)))]
        heads = ["fused_dense_add_count_out", "fused_sum_scale_out"]
        outputs = list(FUSION_OUTPUTS)
        weights = fusion_weights()
        source = _FUSION_C
    elif model == "colour":
        inputs = [("pixels", "float32", (1, 3, 8, 8))]
        params = []
        kernels = [("fused_mean_softmax", ["pixels"], ("probs", "float32", (1, 3)))]
        heads = ["probs"]
        outputs = [("probs", "float32", (1, 3))]
        weights = {}
        source = _COLOUR_C
    else:
        raise ValueError(model)
    with tempfile.TemporaryDirectory() as tmp:
        so = Path(tmp) / "compiled.so"
        compile_so(source, arch, so)
        files = {"compiled.so": so.read_bytes()}
    files["compiled_model.json"] = _graph(inputs, params, kernels, heads).encode()
    files["compiled.params"] = params_bytes(weights, [name for name, _, _ in params])
    if meta:
        files["compiled.meta"] = _meta(target_device, inputs, outputs).encode()
    return files


def write_tar_gz(dest: Path, files: dict[str, bytes]) -> Path:
    """``files`` at the top level of a gzip tarball, as Neo writes ``model-<target>.tar.gz``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return dest


def neo_tarball(out_dir: Path, model: str, target_device: str, *, arch: str = "x86_64",
                meta: bool = True) -> Path:
    """``out_dir/model-<target_device>.tar.gz``, one Neo compilation of ``model``."""
    files = neo_output_files(model, arch=arch, target_device=target_device, meta=meta)
    return write_tar_gz(out_dir / f"model-{target_device}.tar.gz", files)


def write_onnx_fusion_like(dest: Path) -> Path:
    """An ONNX model with two named inputs (one int32) and two outputs, for ONNX-only tests:
    ``Identity:0`` = frame @ W + b + 0.5 * float(sum(counts)), ``Identity_1:0`` = 2*sum+1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = fusion_weights()
    nodes = [
        helper.make_node("MatMul", ["sensor_frame", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["dense"]),
        helper.make_node("ReduceSum", ["event_counts"], ["csum"], keepdims=1),
        helper.make_node("Cast", ["csum"], ["csum_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["csum_f", "half"], ["extra"]),
        helper.make_node("Add", ["dense", "extra"], ["Identity:0"]),
        helper.make_node("Mul", ["csum", "two"], ["twice"]),
        helper.make_node("Add", ["twice", "one"], ["Identity_1:0"]),
    ]
    graph = helper.make_graph(
        nodes, "fusion",
        [helper.make_tensor_value_info("sensor_frame", TensorProto.FLOAT, [1, 6]),
         helper.make_tensor_value_info("event_counts", TensorProto.INT32, [1, 3])],
        [helper.make_tensor_value_info("Identity:0", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("Identity_1:0", TensorProto.INT32, [1, 1])],
        initializer=[numpy_helper.from_array(weights["fc_weight"], "W"),
                     numpy_helper.from_array(weights["fc_bias"], "B"),
                     numpy_helper.from_array(np.array(0.5, np.float32), "half"),
                     numpy_helper.from_array(np.array(2, np.int32), "two"),
                     numpy_helper.from_array(np.array(1, np.int32), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, dest)
    return dest
