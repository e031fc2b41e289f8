"""The vision reference model: a 224x224 RGB image (602 KB of float32) to its dominant colour.

``vision-v1`` exists to measure the request path on a camera-sized input next to the
digits model's 256 B one. The network is small and honest: it reads every pixel once::

    image float32 [1, 224, 224, 3] (NHWC, RGB in 0..1)
      -> fused_mean_pool              per-channel mean over all pixels    [1, 3]
      -> fused_nn_dense_add_nn_softmax  dense 3 -> 10, softmax            [1, 10]

The dense layer is a nearest-prototype classifier written as weights: for the mean colour
``m`` and class prototypes ``p_k``, ``-s * |m - p_k|^2 = 2s m.p_k - s |p_k|^2 - s |m|^2``,
and the last term is the same for every class, so ``W[:, k] = 2s p_k`` and ``b_k = -s
|p_k|^2`` give the softmax of the (scaled, negated) squared distances: the top class is
the colour closest to the image's average. No training, no randomness: the same bytes on
every build.

:func:`build_vision` writes ``<out>/vision-v1/`` as :mod:`models.build` writes the digits
directories: ``model.json`` (with labels and image pre-processing), a ten-image
``testset.npz``, ``onnx/model.onnx`` (ReduceMean, Gemm, Softmax) and one Neo-format
artifact for the host, C kernels with TVM's packed-call ABI built by gcc, which the real
``libdlr.so`` runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agent.core.durable import atomic_write, atomic_write_text
from agent.core.errors import ModelBuildError
from agent.core.model_layout import (
    ARTIFACT_INFO,
    DLR_DIR,
    MODEL_INFO,
    ONNX_FILE,
    TESTSET,
    ArtifactInfo,
    ModelInfo,
    TensorSpec,
    artifact_dir_name,
)
from agent.core.model_metadata import ModelMetadata, Postprocess, Preprocess
from agent.device.platform.boards import generic_target
from agent.device.platform.elf import host_arch
from agent.device.platform.targets import NEO_TARGETS
from models.export.kernels import ABI_HEADER
from models.export.neo import SHARED_FLAGS, cflags_for, find_compiler
from models.export.tvm_format import Entry, Graph, Kernel, graph_json, meta_json, params_bytes
from models.files import npz_bytes

NAME = "vision"
VERSION = "1"
DIR_NAME = f"{NAME}-v{VERSION}"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
HEIGHT = WIDTH = 224
CHANNELS = 3
INPUT_SHAPE = (1, HEIGHT, WIDTH, CHANNELS)
SHARPNESS = 20.0  # s: how sharply the softmax prefers the nearest prototype
# Class names and their RGB prototypes (0..1).
PROTOTYPES: dict[str, tuple[float, float, float]] = {
    "black": (0.05, 0.05, 0.05),
    "white": (0.95, 0.95, 0.95),
    "grey": (0.5, 0.5, 0.5),
    "red": (0.85, 0.1, 0.1),
    "orange": (0.95, 0.55, 0.1),
    "yellow": (0.9, 0.85, 0.15),
    "green": (0.15, 0.65, 0.2),
    "cyan": (0.15, 0.75, 0.8),
    "blue": (0.1, 0.2, 0.85),
    "purple": (0.5, 0.15, 0.65),
}
LABELS = tuple(PROTOTYPES)
N_CLASSES = len(LABELS)
_TESTSET_SEED = 20240611
_PIXELS = HEIGHT * WIDTH

_KERNELS_C = ABI_HEADER + f"""
#include <math.h>
#include <stdio.h>
#define EXPORT __attribute__((visibility("default")))
#define PIXELS {_PIXELS}
#define ROW {WIDTH}
#define N_OUT {N_CLASSES}

/* TVM's module loader looks this symbol up in every library it loads. */
EXPORT void* __tvm_module_ctx = NULL;

static int32_t fail(const char* msg) {{
  fprintf(stderr, "compiled.so: %s\\n", msg);
  return -1;
}}

static const DLTensor* float_tensor(const TVMValue* args, const int32_t* codes, int i,
                                    int64_t elements) {{
  if (codes[i] != kTVMDLTensorHandle && codes[i] != kTVMNDArrayHandle) return NULL;
  const DLTensor* t = (const DLTensor*)args[i].v_handle;
  if (t == NULL || t->data == NULL || t->dtype.code != 2 || t->dtype.bits != 32) return NULL;
  if (t->strides != NULL) return NULL;
  int64_t n = 1;
  for (int d = 0; d < t->ndim; ++d) n *= t->shape[d];
  return n == elements ? t : NULL;
}}

static inline float* data_of(const DLTensor* t) {{
  return (float*)((char*)t->data + t->byte_offset);
}}

/* Mean of each channel of an NHWC image. Twelve float partial sums (four pixels) per row
   vectorise; rows are summed in double, so the mean does not drift with the image size. */
EXPORT int32_t fused_mean_pool(TVMValue* args, int32_t* codes, int32_t num_args,
                               TVMValue* ret, int32_t* ret_code, void* resource_handle) {{
  (void)ret; (void)ret_code; (void)resource_handle;
  if (num_args != 2) return fail("fused_mean_pool: expected 2 arguments");
  const DLTensor* in = float_tensor(args, codes, 0, (int64_t)PIXELS * 3);
  const DLTensor* out = float_tensor(args, codes, 1, 3);
  if (in == NULL || out == NULL || in->ndim != 4 || in->shape[3] != 3)
    return fail("fused_mean_pool: argument shapes or dtypes do not match the compiled kernel");
  const float* restrict x = data_of(in);
  double total[3] = {{0.0, 0.0, 0.0}};
  for (int64_t row = 0; row < PIXELS / ROW; ++row) {{
    float acc[12] = {{0}};
    const float* restrict p = x + row * ROW * 3;
    for (int i = 0; i < ROW / 4; ++i, p += 12)
      for (int j = 0; j < 12; ++j) acc[j] += p[j];
    for (int j = 0; j < 12; ++j) total[j % 3] += acc[j];
  }}
  float* restrict y = data_of(out);
  for (int c = 0; c < 3; ++c) y[c] = (float)(total[c] / PIXELS);
  return 0;
}}

EXPORT int32_t fused_nn_dense_add_nn_softmax(TVMValue* args, int32_t* codes, int32_t num_args,
                                             TVMValue* ret, int32_t* ret_code,
                                             void* resource_handle) {{
  (void)ret; (void)ret_code; (void)resource_handle;
  if (num_args != 4) return fail("fused_nn_dense_add_nn_softmax: expected 4 arguments");
  const DLTensor* xt = float_tensor(args, codes, 0, 3);
  const DLTensor* wt = float_tensor(args, codes, 1, 3 * N_OUT);
  const DLTensor* bt = float_tensor(args, codes, 2, N_OUT);
  const DLTensor* yt = float_tensor(args, codes, 3, N_OUT);
  if (xt == NULL || wt == NULL || bt == NULL || yt == NULL)
    return fail("fused_nn_dense_add_nn_softmax: argument shapes or dtypes do not match");
  const float* x = data_of(xt);
  const float* w = data_of(wt);
  const float* b = data_of(bt);
  float* y = data_of(yt);
  float acc[N_OUT], top, total = 0.0f;
  for (int j = 0; j < N_OUT; ++j) acc[j] = b[j];
  for (int k = 0; k < 3; ++k)
    for (int j = 0; j < N_OUT; ++j) acc[j] += x[k] * w[k * N_OUT + j];
  top = acc[0];
  for (int j = 1; j < N_OUT; ++j) top = acc[j] > top ? acc[j] : top;
  for (int j = 0; j < N_OUT; ++j) {{
    acc[j] = expf(acc[j] - top);
    total += acc[j];
  }}
  for (int j = 0; j < N_OUT; ++j) y[j] = acc[j] / total;
  return 0;
}}
"""


def weights() -> dict[str, np.ndarray]:
    """``dense_weight`` [3, 10] and ``dense_bias`` [10]: the prototypes as a dense layer."""
    protos = np.array(list(PROTOTYPES.values()), dtype=np.float64)  # [10, 3]
    return {"dense_weight": (2 * SHARPNESS * protos.T).astype(np.float32),
            "dense_bias": (-SHARPNESS * (protos ** 2).sum(axis=1)).astype(np.float32)}


def reference(images: np.ndarray) -> np.ndarray:
    """The model's ``probabilities`` for float32 [N, 224, 224, 3] images, by numpy."""
    params = weights()
    means = images.reshape(len(images), -1, CHANNELS).astype(np.float64).mean(axis=1)
    logits = means @ params["dense_weight"].astype(np.float64) + params["dense_bias"]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: np.ndarray = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return probabilities


def testset() -> dict[str, np.ndarray]:
    """One 8-bit-quantised noisy picture per class: ``x`` [10, 224, 224, 3], ``y`` [10]."""
    rng = np.random.default_rng(_TESTSET_SEED)
    images = []
    for proto in PROTOTYPES.values():
        noise = rng.normal(0.0, 0.08, size=(HEIGHT, WIDTH, CHANNELS))
        pixels = np.clip(np.round((np.array(proto) + noise) * 255), 0, 255)
        images.append((pixels / 255).astype(np.float32))
    return {"x": np.stack(images), "y": np.arange(N_CLASSES, dtype=np.int64)}


def graph() -> Graph:
    image = Entry(INPUT_NAME, INPUT_SHAPE)
    weight, bias = Entry("dense_weight", (CHANNELS, N_CLASSES)), Entry("dense_bias", (N_CLASSES,))
    pooled = Entry("fused_mean_pool_out", (1, CHANNELS))
    scores = Entry("fused_nn_dense_add_nn_softmax_out", (1, N_CLASSES))
    kernels = (Kernel("fused_mean_pool", (INPUT_NAME,), pooled),
               Kernel("fused_nn_dense_add_nn_softmax", (pooled.name, weight.name, bias.name),
                      scores))
    return Graph(image, (weight, bias), kernels, OUTPUT_NAME)


def onnx_model_bytes() -> bytes:
    """ReduceMean over H and W, Gemm with the prototype weights, Softmax (opset 17)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    params = weights()
    nodes = [
        helper.make_node("ReduceMean", [INPUT_NAME], ["pooled"], axes=[1, 2], keepdims=0,
                         name="mean_pool"),
        helper.make_node("Gemm", ["pooled", "dense_weight", "dense_bias"], ["logits"],
                         name="dense"),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=-1, name="softmax"),
    ]
    graph_proto = helper.make_graph(
        nodes, "vision_colour",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(INPUT_SHAPE))],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, N_CLASSES])],
        initializer=[numpy_helper.from_array(params[name], name) for name in sorted(params)])
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8, producer_name="edge-inference-agent models")
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def model_info(accuracy: float) -> ModelInfo:
    metadata = ModelMetadata(
        description="dominant colour of a 224x224 RGB image (per-channel mean, nearest of "
                    "ten colour prototypes)",
        labels=LABELS,
        preprocess=Preprocess(input=INPUT_NAME, layout="NHWC", size=(HEIGHT, WIDTH),
                              channel_order="RGB", scale=1 / 255, dtype="float32"),
        postprocess=Postprocess(output=OUTPUT_NAME, softmax=False, top_k=3))
    return ModelInfo(
        name=NAME, version=VERSION,
        inputs=[TensorSpec(name=INPUT_NAME, dtype="float32", shape=INPUT_SHAPE)],
        outputs=[TensorSpec(name=OUTPUT_NAME, dtype="float32", shape=(1, N_CLASSES))],
        accuracy=round(accuracy, 6), metadata=metadata)


def _write_artifact(artifact_dir: Path, target: str) -> None:
    arch = host_arch()
    compiler = find_compiler(arch)
    if compiler is None:
        raise ModelBuildError(f"no C compiler for the host ({arch}): install gcc")
    flags = [*cflags_for(target, arch), *SHARED_FLAGS]
    info = ArtifactInfo(target=target, arch=arch, jetpack=NEO_TARGETS[target].jetpack,
                        compiler=compiler.description, cflags=flags)
    artifact_dir.mkdir(parents=True)
    (artifact_dir / "kernels.c").write_text(_KERNELS_C)
    # Relative names and no -g keep build paths out of the binary: rebuilds are identical.
    command = [compiler.command, *flags, "kernels.c", "-o", "compiled.so", "-lm"]
    result = subprocess.run(command, cwd=artifact_dir, capture_output=True, text=True,
                            timeout=300)
    if result.returncode != 0:
        raise ModelBuildError(f"{' '.join(command)} failed ({result.returncode}):\n"
                              f"{result.stderr.strip()}")
    (artifact_dir / "kernels.c").unlink()
    the_graph = graph()
    params = weights()
    atomic_write(artifact_dir / "compiled.params",
                 params_bytes(params, [entry.name for entry in the_graph.params]))
    atomic_write_text(artifact_dir / "compiled_model.json", graph_json(the_graph))
    atomic_write_text(artifact_dir / "compiled.meta", meta_json(the_graph))
    atomic_write_text(artifact_dir / ARTIFACT_INFO,
                      json.dumps(info.model_dump(mode="json"), indent=2) + "\n")
    artifact_dir.chmod(0o755)


def build_vision(out_dir: Path, *, log: Callable[[str], None] = print) -> Path:
    """Build (or find up to date) ``out_dir/vision-v1``; returns the model directory.

    Stamped with a digest of this module and the compiler, like the digits builds, so a
    second call with nothing changed only hashes. Raises :class:`ModelBuildError`.
    """
    out_dir = out_dir.resolve()
    target_dir = out_dir / DIR_NAME
    compiler = find_compiler(host_arch())
    digest = hashlib.sha256(Path(__file__).read_bytes()
                            + f"|{compiler}|{host_arch()}".encode()).hexdigest()
    stamp = out_dir / ".build" / "stamps" / DIR_NAME
    if stamp.is_file() and stamp.read_text().strip() == digest and \
            (target_dir / MODEL_INFO).is_file():
        log(f"{DIR_NAME}: up to date")
        return target_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DIR_NAME}.", dir=out_dir))
    try:
        data = testset()
        accuracy = float((reference(data["x"]).argmax(axis=1) == data["y"]).mean())
        atomic_write_text(staging / MODEL_INFO,
                          json.dumps(model_info(accuracy).model_dump(mode="json"), indent=2)
                          + "\n")
        atomic_write(staging / TESTSET, npz_bytes(data))
        atomic_write(staging / ONNX_FILE, onnx_model_bytes())
        target = generic_target(host_arch())
        _write_artifact(staging / DLR_DIR / artifact_dir_name(target, host_arch()), target)
        staging.chmod(0o755)
        if target_dir.exists():
            shutil.rmtree(target_dir)
        staging.rename(target_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_text(stamp, digest + "\n")
    log(f"{DIR_NAME}: built (host DLR artifact and ONNX)")
    return target_dir
