"""Shared memory for the native client: POSIX shared memory regions and tensor layouts.

A :class:`SharedRegion` is a POSIX shared memory object (``shm_open(key)``: the file
``/dev/shm/<key>`` on Linux, as Triton's ``tritonclient.utils.shared_memory`` creates
them) mapped into this process. Registered with the server
(:meth:`agent.client.InferenceClient.register_region`), it is mapped there too, once:
requests then name a place in it (:class:`RegionRef`) instead of sending bytes, the
runtime reads the inputs from it and writes the outputs into it.

A :class:`TensorLayout` places every input and output of a model in one region (each at
an offset aligned to 64 bytes), so an application fills its inputs in place
(:meth:`TensorLayout.input` is a numpy view) and finds its outputs there after
:meth:`~agent.client.InferenceClient.infer_layout`::

    layout = client.layout()
    with region_for(layout, "/cam0") as region:
        client.register_region("cam0", region)
        frame = layout.input(region, "input")
        frame[...] = pixels                      # written in place, no copy on send
        result = client.infer_layout(layout, region)
        scores = result.outputs["scores"]        # a view on the region
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from agent.core.errors import RegionError
from agent.core.model_layout import TensorSpec
from agent.wire.shm_ring import shm_path

ALIGN = 64



@dataclass(frozen=True)
class RegionRef:
    """A place in a :class:`SharedRegion`: ``byte_size`` bytes at ``offset``."""

    region: SharedRegion
    offset: int
    byte_size: int


class SharedRegion:
    """A POSIX shared memory object mapped read-write into this process.

    ``name`` is what the server knows it as (set by
    :meth:`~agent.client.InferenceClient.register_region`; the key without its slash
    until then). :meth:`close` unmaps it (views handed out keep the mapping alive until
    they are dropped); :meth:`unlink` removes the object itself. As a context manager it
    closes on exit, and unlinks the object when this process created it.
    """

    def __init__(self, key: str, mapping: mmap.mmap, byte_size: int, *, owner: bool) -> None:
        self.key = key
        self.byte_size = byte_size
        self.owner = owner
        self.name = key.lstrip("/")
        self._mapping: mmap.mmap | None = mapping

    @classmethod
    def create(cls, key: str, byte_size: int, *, mode: int = 0o600) -> SharedRegion:
        """A new object of ``byte_size`` zero bytes (:class:`RegionError` when ``key``
        exists). ``mode`` 0o600 lets only this user map it: the agent must run as the same
        user, or give it 0o660 and a group both share."""
        if byte_size <= 0:
            raise RegionError(f"a shared memory region needs a positive size, got {byte_size}")
        path = shm_path(key)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError as err:
            raise RegionError(f"shared memory object {key!r} exists already (attach to it, "
                              "or unlink it first)") from err
        except OSError as err:
            raise RegionError(f"cannot create shared memory object {key!r}: "
                              f"{err.strerror}") from err
        try:
            os.fchmod(fd, mode)  # the umask does not narrow what was asked for
            os.ftruncate(fd, byte_size)
            mapping = mmap.mmap(fd, byte_size, mmap.MAP_SHARED,
                                mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as err:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise RegionError(f"cannot size or map {key!r}: {err}") from err
        os.close(fd)
        return cls(key, mapping, byte_size, owner=True)

    @classmethod
    def attach(cls, key: str) -> SharedRegion:
        """Map an existing object (all of it)."""
        path = shm_path(key)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError as err:
            raise RegionError(f"no shared memory object {key!r}") from err
        except OSError as err:
            raise RegionError(f"cannot open shared memory object {key!r}: "
                              f"{err.strerror}") from err
        try:
            size = os.fstat(fd).st_size
            if size <= 0:
                raise RegionError(f"shared memory object {key!r} is empty")
            mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        return cls(key, mapping, size, owner=False)

    @property
    def mapping(self) -> mmap.mmap:
        if self._mapping is None:
            raise RegionError(f"region {self.key!r} is closed")
        return self._mapping

    def array(self, offset: int, dtype: np.dtype | str | type, shape: Sequence[int]
              ) -> np.ndarray:
        """A numpy view of ``dtype`` and ``shape`` at ``offset``: reads and writes go to the
        shared memory itself."""
        dt = np.dtype(dtype)
        shape = tuple(int(d) for d in shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        self._check(offset, nbytes)
        view: np.ndarray = np.frombuffer(self.mapping, dtype=dt, count=nbytes // dt.itemsize
                                         if dt.itemsize else 0, offset=offset).reshape(shape)
        return view

    def ref(self, offset: int = 0, nbytes: int | None = None) -> RegionRef:
        """The place of ``nbytes`` bytes (default: to the end) at ``offset``, to name in a
        request."""
        size = self.byte_size - offset if nbytes is None else nbytes
        self._check(offset, size)
        return RegionRef(self, offset, size)

    def _check(self, offset: int, nbytes: int) -> None:
        if offset < 0 or nbytes < 0 or offset + nbytes > self.byte_size:
            raise RegionError(f"{nbytes} bytes at offset {offset} do not fit region "
                              f"{self.key!r} ({self.byte_size} bytes)")

    def close(self) -> None:
        """Unmap (at once, or when the last view on it is dropped)."""
        mapping, self._mapping = self._mapping, None
        if mapping is not None:
            with contextlib.suppress(BufferError):  # views alive: unmapped with the last
                mapping.close()

    def unlink(self) -> None:
        """Remove the shared memory object (mappings of it stay valid until closed)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(shm_path(self.key))

    def __enter__(self) -> SharedRegion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self.owner:
            self.unlink()

    def __repr__(self) -> str:
        return f"SharedRegion({self.key!r}, {self.byte_size} bytes)"


@dataclass(frozen=True)
class Placement:
    """Where one tensor lies in a layout."""

    spec: TensorSpec
    offset: int
    nbytes: int


class TensorLayout:
    """Every input, then every output, of a model in one region, each aligned to 64."""

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec] = (),
                 *, base: int = 0) -> None:
        self.base = base
        self.inputs: dict[str, Placement] = {}
        self.outputs: dict[str, Placement] = {}
        end = base
        for specs, places in ((inputs, self.inputs), (outputs, self.outputs)):
            for spec in specs:
                offset = -(-end // ALIGN) * ALIGN
                nbytes = int(np.prod(spec.shape, dtype=np.int64)) * \
                    np.dtype(spec.dtype).itemsize
                places[spec.name] = Placement(spec, offset, nbytes)
                end = offset + nbytes
        self.nbytes = end  # the region size it needs (from offset 0)

    def __iter__(self) -> Iterator[Placement]:
        yield from self.inputs.values()
        yield from self.outputs.values()

    def input(self, region: SharedRegion, name: str) -> np.ndarray:
        """The view on ``region`` where input ``name`` goes."""
        return self._view(region, self._place(self.inputs, name, "input"))

    def output(self, region: SharedRegion, name: str) -> np.ndarray:
        """The view on ``region`` where the runtime writes output ``name``."""
        return self._view(region, self._place(self.outputs, name, "output"))

    def input_refs(self, region: SharedRegion) -> dict[str, RegionRef]:
        return {name: region.ref(p.offset, p.nbytes) for name, p in self.inputs.items()}

    def output_refs(self, region: SharedRegion) -> dict[str, RegionRef]:
        return {name: region.ref(p.offset, p.nbytes) for name, p in self.outputs.items()}

    @staticmethod
    def _place(places: dict[str, Placement], name: str, role: str) -> Placement:
        place = places.get(name)
        if place is None:
            raise RegionError(f"the layout has no {role} {name!r} ({role}s: {list(places)})")
        return place

    @staticmethod
    def _view(region: SharedRegion, place: Placement) -> np.ndarray:
        return region.array(place.offset, place.spec.dtype, place.spec.shape)


def region_for(layout: TensorLayout, key: str, *, mode: int = 0o600) -> SharedRegion:
    """A new region just large enough for ``layout``."""
    return SharedRegion.create(key, layout.nbytes, mode=mode)
