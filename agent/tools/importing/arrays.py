"""Arrays of cases for a model's tensors, read from ``.npz`` files or made up.

A file of cases holds one array per tensor with a leading case dimension N: by tensor name
(``sensor_frame``), by the golden file's name (``in/sensor_frame``, ``out/Identity:0``), or
``x`` for the only input of a single-input model. One case of tensor ``[1, 6]`` may be
stored as ``[6]`` (an array ``[N, 6]``): a leading batch dimension of 1 is optional.

Made-up inputs (:func:`random_inputs`) are seeded, so an import is reproducible: float
tensors take standard-normal values, ``uint8`` ones uniform values in [0, 255], the other
integer tensors small non-negative values in [0, 16) (counts, indices, token ids: values a
real input could hold for most models).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from agent.core.errors import AgentError
from agent.core.model_layout import TensorSpec

RANDOM_SEED = 20240607
_INT_HIGH = 16
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same arrays give the same bytes


def read_npz(path: Path, where: str, error: type[AgentError]) -> dict[str, np.ndarray]:
    """Every array of ``path``; ``where`` names it in the ``error`` raised for a bad file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise error(f"{where}: a single .npy array, not an .npz of named arrays")
            return {name: np.asarray(data[name]) for name in data.files}
    except FileNotFoundError as err:
        raise error(f"{where}: no such file") from err
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise error(f"{where}: not a readable .npz file: {err}") from err


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` that ``np.load`` reads, with any array name (``out/Identity:0``) and
    reproducible bytes (``np.savez`` stamps the time into its members)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            entry.external_attr = 0o644 << 16
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]),
                                      allow_pickle=False)
            archive.writestr(entry, member.getvalue())
    return buffer.getvalue()


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """:func:`npz_bytes` of ``arrays`` into ``path``."""
    path.write_bytes(npz_bytes(arrays))


def cases_by_tensor(arrays: dict[str, np.ndarray], specs: Sequence[TensorSpec], *,
                    prefix: str, where: str, error: type[AgentError],
                    extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The array of each spec in ``arrays`` (by name, ``prefix + name``, or ``x`` for a lone
    input); arrays named by no spec and not in ``extra`` are an error."""
    found: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for spec in specs:
        keys = [k for k in (spec.name, prefix + spec.name) if k in arrays]
        if not keys and prefix == "in/" and len(specs) == 1 and "x" in arrays:
            keys = ["x"]
        if not keys:
            raise error(f"{where}: no array for {spec.name!r} (it holds "
                        f"{', '.join(sorted(arrays)) or 'nothing'})")
        if len(keys) > 1:
            raise error(f"{where}: both {keys[0]!r} and {keys[1]!r} hold {spec.name!r}")
        found[spec.name] = arrays[keys[0]]
        used.add(keys[0])
    unknown = sorted(set(arrays) - used - set(extra))
    if unknown:
        raise error(f"{where}: arrays {unknown} name no tensor of the model "
                    f"({', '.join(s.name for s in specs)})")
    return found


def as_cases(array: np.ndarray, spec: TensorSpec, *, where: str, error: type[AgentError],
             cast: bool) -> np.ndarray:
    """``array`` as ``[N, *spec.shape]`` of ``spec.dtype``. ``cast`` converts any dtype; else
    only a same-kind conversion (float64 to float32, int64 to int32) is accepted."""
    name = f"{where}: array {spec.name!r}"
    per_case = tuple(array.shape[1:])
    fits = per_case == spec.shape or (len(spec.shape) > 0 and spec.shape[0] == 1
                                      and per_case == spec.shape[1:])
    if array.ndim < 1 or array.shape[0] < 1 or not fits:
        raise error(f"{name} is {list(array.shape)}; {spec.name} {spec.dtype} "
                    f"{list(spec.shape)} needs [N, {', '.join(map(str, spec.shape))}]")
    if array.dtype.kind not in "biuf":
        raise error(f"{name} holds {array.dtype}, not numbers")
    if not cast and not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
        raise error(f"{name} is {array.dtype}; {spec.name} is {spec.dtype} (give "
                    f"{spec.dtype} values)")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise error(f"{name} holds NaN or infinite values")
    return np.ascontiguousarray(array.astype(spec.dtype).reshape((array.shape[0], *spec.shape)))


def case_count(cases: dict[str, np.ndarray], where: str, error: type[AgentError]) -> int:
    """The N every array of ``cases`` shares."""
    counts = {name: int(array.shape[0]) for name, array in cases.items()}
    if len(set(counts.values())) > 1:
        raise error(f"{where}: arrays hold different numbers of cases: {counts}")
    return next(iter(counts.values()), 0)


def random_inputs(specs: Sequence[TensorSpec], count: int,
                  seed: int = RANDOM_SEED) -> dict[str, np.ndarray]:
    """``count`` seeded cases per input (see the module docstring for the distributions)."""
    rng = np.random.default_rng(seed)
    made: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = (count, *spec.shape)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            made[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            high = 256 if dtype == np.uint8 else _INT_HIGH
            made[spec.name] = rng.integers(0, high, size=shape).astype(dtype)
    return made


def first_cases(cases: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
    """At most ``count`` leading cases of each array."""
    return {name: np.ascontiguousarray(array[:count]) for name, array in cases.items()}
