"""``runner.c``: a stand-alone harness that runs an artifact's own ``compiled.so``.

There is no libdlr for the test machine's emulated ARM boards, so an ARM
artifact is checked by running this harness under qemu-user: it dlopen()s the
very ``compiled.so`` that ships, reads the weights from ``compiled.params``
with the same layout TVM uses, and calls the kernels in graph order with
packed-call arguments, as libdlr's graph executor does. Usage::

    runner ARTIFACT_DIR INPUT.f32 OUTPUT.f32

``INPUT.f32`` holds one or more inputs as raw little-endian float32 rows; the
output file gets one row of float32 per input. Exit status 0 on success, 2 for
bad usage or files, 3 when a kernel reports an error.
"""

from __future__ import annotations

import math

from models.export.kernels import ABI_HEADER
from models.export.tvm_format import Graph

_BODY = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tensor {
  const char* name;
  int32_t ndim;
  int64_t shape[2];
  float* data;
};

struct op {
  const char* func_name;
  int n_args;
  int args[4]; /* indices into tensors[]; the last one is the output */
};

static void* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char* buf = malloc(len > 0 ? (size_t)len : 1);
  if (buf && len > 0 && fread(buf, 1, (size_t)len, f) != (size_t)len) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *size = len > 0 ? (size_t)len : 0;
  return buf;
}

static uint64_t take_u64(const char* buf, size_t size, size_t* at, int* ok) {
  uint64_t v = 0;
  if (*at + 8 > size) { *ok = 0; return 0; }
  memcpy(&v, buf + *at, 8); /* the format and every supported target are little-endian */
  *at += 8;
  return v;
}

/* compiled.params: TVM's SaveParams layout (see models/export/tvm_format.py). */
static int load_params(const char* path) {
  size_t size = 0, at = 0;
  int ok = 1;
  int loaded[N_TENSORS] = {0};
  char* buf = read_file(path, &size);
  if (!buf) return 0;
  if (take_u64(buf, size, &at, &ok) != 0xF7E58D4F05049CB7ULL) ok = 0;
  take_u64(buf, size, &at, &ok);
  uint64_t count = take_u64(buf, size, &at, &ok);
  if (!ok || count > 64) { free(buf); return 0; }
  char names[64][128];
  for (uint64_t i = 0; i < count && ok; ++i) {
    uint64_t len = take_u64(buf, size, &at, &ok);
    if (!ok || len >= sizeof names[0] || at + len > size) { ok = 0; break; }
    memcpy(names[i], buf + at, len);
    names[i][len] = 0;
    at += len;
  }
  if (take_u64(buf, size, &at, &ok) != count) ok = 0;
  for (uint64_t i = 0; i < count && ok; ++i) {
    int32_t head[3];
    if (take_u64(buf, size, &at, &ok) != 0xDD5E40F096B4A13FULL) { ok = 0; break; }
    take_u64(buf, size, &at, &ok);
    if (at + 16 > size) { ok = 0; break; }
    memcpy(head, buf + at, 12); /* device_type, device_id, ndim */
    at += 16;                   /* ... and the 4-byte dtype (float32 is all we store) */
    int64_t dims[8] = {0};
    if (head[2] < 0 || head[2] > 8 || at + 8 * (size_t)head[2] > size) { ok = 0; break; }
    memcpy(dims, buf + at, 8 * (size_t)head[2]);
    at += 8 * (size_t)head[2];
    uint64_t nbytes = take_u64(buf, size, &at, &ok);
    if (!ok || at + nbytes > size) { ok = 0; break; }
    for (int t = 0; t < N_TENSORS; ++t) {
      if (strcmp(tensors[t].name, names[i]) != 0) continue;
      int64_t want = 4;
      for (int d = 0; d < tensors[t].ndim; ++d) want *= tensors[t].shape[d];
      if ((uint64_t)want != nbytes) { ok = 0; break; }
      /* copied out so the kernels get aligned data whatever the file offset */
      memcpy(tensors[t].data, buf + at, nbytes);
      loaded[t] = 1;
    }
    at += nbytes;
  }
  free(buf);
  for (int t = 1; t <= N_PARAMS; ++t)
    if (!loaded[t]) ok = 0;
  return ok;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s ARTIFACT_DIR INPUT.f32 OUTPUT.f32\n", argv[0]);
    return 2;
  }
  char path[4096];
  for (int t = 0; t < N_TENSORS; ++t) {
    int64_t n = 1;
    for (int d = 0; d < tensors[t].ndim; ++d) n *= tensors[t].shape[d];
    tensors[t].data = calloc((size_t)n, sizeof(float));
  }
  snprintf(path, sizeof path, "%s/compiled.so", argv[1]);
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "runner: %s\n", dlerror());
    return 2;
  }
  tvm_packed_fn fns[N_OPS];
  for (int i = 0; i < N_OPS; ++i) {
    fns[i] = (tvm_packed_fn)dlsym(lib, ops[i].func_name);
    if (!fns[i]) {
      fprintf(stderr, "runner: compiled.so lacks %s\n", ops[i].func_name);
      return 2;
    }
  }
  snprintf(path, sizeof path, "%s/compiled.params", argv[1]);
  if (!load_params(path)) {
    fprintf(stderr, "runner: %s is unreadable or does not match the graph\n", path);
    return 2;
  }
  size_t in_size = 0;
  float* inputs = read_file(argv[2], &in_size);
  size_t row_bytes = (size_t)INPUT_SIZE * sizeof(float);
  if (!inputs || in_size == 0 || in_size % row_bytes != 0) {
    fprintf(stderr, "runner: %s is not a whole number of %d-float inputs\n", argv[2], INPUT_SIZE);
    return 2;
  }
  size_t rows = in_size / row_bytes;
  FILE* out = fopen(argv[3], "wb");
  if (!out) {
    fprintf(stderr, "runner: cannot write %s\n", argv[3]);
    return 2;
  }
  for (size_t r = 0; r < rows; ++r) {
    memcpy(tensors[0].data, inputs + r * INPUT_SIZE, row_bytes);
    for (int i = 0; i < N_OPS; ++i) {
      DLTensor dl[4];
      TVMValue values[4];
      int32_t codes[4];
      for (int a = 0; a < ops[i].n_args; ++a) {
        struct tensor* t = &tensors[ops[i].args[a]];
        DLTensor view = {t->data, {1, 0}, t->ndim, {2, 32, 1}, t->shape, NULL, 0};
        dl[a] = view;
        values[a].v_handle = &dl[a];
        codes[a] = kTVMDLTensorHandle;
      }
      TVMValue ret;
      int32_t ret_code = 0;
      int32_t status = fns[i](values, codes, ops[i].n_args, &ret, &ret_code, NULL);
      if (status != 0) {
        fprintf(stderr, "runner: %s returned %d\n", ops[i].func_name, status);
        return 3;
      }
    }
    fwrite(tensors[N_TENSORS - 1].data, sizeof(float), OUTPUT_SIZE, out);
  }
  return fclose(out) == 0 ? 0 : 2;
}
"""


def runner_source(graph: Graph) -> str:
    """The C harness for ``graph``, with the graph's tensors and kernel order baked in."""
    entries = graph.entries()
    tensor_rows = []
    for entry in entries:
        dims = ", ".join(str(dim) for dim in entry.shape)
        tensor_rows.append(f'  {{"{entry.name}", {len(entry.shape)}, {{{dims}}}, NULL}},')
    op_rows = []
    for kernel in graph.kernels:
        args = [graph.index(name) for name in kernel.inputs] + [graph.index(kernel.output.name)]
        op_rows.append(
            f'  {{"{kernel.func_name}", {len(args)}, {{{", ".join(map(str, args))}}}}},'
        )
    input_size = math.prod(graph.input.shape)
    output_size = math.prod(entries[-1].shape)
    head, body = _BODY.split("static void* read_file", 1)
    tables = "\n".join(
        [
            f"#define N_TENSORS {len(entries)}",
            f"#define N_PARAMS {len(graph.params)}",
            f"#define N_OPS {len(graph.kernels)}",
            f"#define INPUT_SIZE {input_size}",
            f"#define OUTPUT_SIZE {output_size}",
            "/* graph input, weights (as named in compiled.params), then kernel outputs */",
            "static struct tensor tensors[N_TENSORS] = {",
            *tensor_rows,
            "};",
            "static const struct op ops[N_OPS] = {",
            *op_rows,
            "};",
            "",
        ]
    )
    return (
        "/* Generated by models.export.runner: runs compiled.so without libdlr (e.g. under"
        " qemu-user). */\n"
        + ABI_HEADER
        + head
        + tables
        + "\nstatic void* read_file"
        + body
    )
