"""System shared memory regions that clients register with the server, mapped once.

The model of Triton's system-shared-memory extension: a client creates a POSIX shared
memory object (``shm_open(key)``, so ``/dev/shm/<key>`` on Linux), registers it under a
name with an offset and a byte size, and then names the region, an offset into it and a
byte size for each input or output of a request instead of sending tensor bytes. The
server maps the object once, at registration, and every request gets numpy views on that
mapping: the runtime reads inputs and writes outputs where they are.

A region in use by a request stays mapped until the request ends, also when the client
unregisters it meanwhile (the name is freed at once; the mapping goes with its last
user), so unregistering never pulls memory out from under a running model.

A client names the same places on every request, so a region keeps the views it made
(the same ndarray for the same offset, size, dtype and shape), dropped when the region
is unregistered; :attr:`RegionRegistry.generation` changes on every register and
unregister, so what a server prepared from a request can tell whether the regions it
names are still the ones registered.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.core.errors import RegionError
from agent.wire.shm_ring import shm_path

MAX_REGIONS = 64
MAX_VIEWS = 256  # views a region keeps; past this it forgets them and starts again



@dataclass(eq=False)
class Region:
    """One registered region: its mapping and how many requests use it now."""

    name: str
    key: str
    offset: int
    byte_size: int
    mapping: mmap.mmap
    users: int = 0
    removed: bool = False
    _views: dict[tuple[int, int, np.dtype, tuple[int, ...]], np.ndarray] = field(
        default_factory=dict)

    def view(self, offset: int, byte_size: int, dtype: np.dtype, shape: tuple[int, ...],
             *, what: str) -> np.ndarray:
        """A view of ``shape`` and ``dtype`` at ``offset`` (relative to the region's own
        offset), which must cover exactly ``byte_size`` bytes inside the region; the
        same array for the same place while the region is registered."""
        key = (offset, byte_size, dtype, shape)
        array = self._views.get(key)
        if array is not None:
            return array
        array = self._new_view(offset, byte_size, dtype, shape, what=what)
        if len(self._views) >= MAX_VIEWS:
            self._views.clear()
        self._views[key] = array
        if self.removed:  # unregistered meanwhile: keep nothing that pins the mapping
            self._views.clear()
        return array

    def _new_view(self, offset: int, byte_size: int, dtype: np.dtype, shape: tuple[int, ...],
                  *, what: str) -> np.ndarray:
        need = math.prod(shape) * dtype.itemsize  # exact (numpy's prod costs 3 us)
        if offset < 0 or byte_size < 0:
            raise RegionError(f"{what}: negative offset or byte size in region {self.name!r}")
        if byte_size != need:
            raise RegionError(f"{what}: {dtype} {list(shape)} takes {need} bytes, the request "
                              f"gives {byte_size} in region {self.name!r}")
        if offset + byte_size > self.byte_size:
            raise RegionError(
                f"{what}: region {self.name!r} is too small ({self.byte_size} bytes; "
                f"{byte_size} at offset {offset} are needed)")
        start = self.offset + offset
        array: np.ndarray = np.frombuffer(self.mapping, dtype=dtype, count=need // dtype.itemsize
                                          if dtype.itemsize else 0, offset=start).reshape(shape)
        return array

    def status(self) -> dict[str, object]:
        return {"name": self.name, "key": self.key, "offset": self.offset,
                "byte_size": self.byte_size}


class RegionRegistry:
    """The regions registered with one server, by name."""

    def __init__(self, *, max_regions: int = MAX_REGIONS) -> None:
        self.max_regions = max_regions
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()
        self._closing: list[Region] = []  # unregistered while in use, or still viewed
        self.generation = 0  # changes on every register and unregister

    def register(self, name: str, key: str, offset: int, byte_size: int) -> Region:
        """Map ``key`` and register it as ``name``; :class:`RegionError` when the name is
        taken, the object does not exist, or offset + byte size pass its end."""
        if not name:
            raise RegionError("a region needs a name")
        if offset < 0 or byte_size <= 0:
            raise RegionError(f"region {name!r}: offset must be >= 0 and byte_size > 0")
        path = shm_path(key)
        with self._lock:
            if name in self._regions:
                raise RegionError(f"region {name!r} is already registered")
            if len(self._regions) >= self.max_regions:
                raise RegionError(f"at most {self.max_regions} regions may be registered")
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError as err:
            raise RegionError(f"region {name!r}: no shared memory object {key!r}") from err
        except OSError as err:
            raise RegionError(f"region {name!r}: cannot open {key!r}: {err.strerror}") from err
        try:
            size = os.fstat(fd).st_size
            if offset + byte_size > size:
                raise RegionError(f"region {name!r}: {byte_size} bytes at offset {offset} pass "
                                  f"the end of {key!r} ({size} bytes)")
            mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        region = Region(name=name, key=key, offset=offset, byte_size=byte_size, mapping=mapping)
        with self._lock:
            if name in self._regions:
                mapping.close()
                raise RegionError(f"region {name!r} is already registered")
            self._regions[name] = region
            self.generation += 1
        return region

    def unregister(self, name: str | None = None) -> list[str]:
        """Unregister ``name`` (every region when None); names a region not registered is
        not an error, as in Triton. Regions in use are unmapped when their last request
        ends."""
        with self._lock:
            names = list(self._regions) if name is None else \
                [name] if name in self._regions else []
            for key in names:
                region = self._regions.pop(key)
                region.removed = True
                region._views.clear()  # after `removed`: see Region.view
                self._closing.append(region)
            if names:
                self.generation += 1
            self._collect()
        return names

    def status(self, name: str | None = None) -> list[dict[str, object]]:
        with self._lock:
            if name is not None:
                region = self._regions.get(name)
                if region is None:
                    raise RegionError(f"region {name!r} is not registered")
                return [region.status()]
            return [r.status() for r in self._regions.values()]

    @contextlib.contextmanager
    def using(self, name: str) -> Iterator[Region]:
        """The region ``name``, kept mapped until the block ends."""
        with self._lock:
            region = self._regions.get(name)
            if region is None:
                raise RegionError(f"region {name!r} is not registered")
            region.users += 1
        try:
            yield region
        finally:
            with self._lock:
                region.users -= 1
                self._collect()

    def hold(self, regions: Sequence[Region], generation: int) -> bool:
        """Count ``regions`` in use, as :meth:`using` does, if the registry is still at
        ``generation`` (so they are all still registered); False (nothing held) if not."""
        with self._lock:
            if generation != self.generation:
                return False
            for region in regions:
                region.users += 1
            return True

    def release(self, regions: Sequence[Region]) -> None:
        """End a :meth:`hold`."""
        with self._lock:
            for region in regions:
                region.users -= 1
            if self._closing:
                self._collect()

    def _collect(self) -> None:
        """Unmap removed regions no request uses (under the lock)."""
        keep = []
        for region in self._closing:
            if region.users:
                keep.append(region)
                continue
            try:
                region.mapping.close()
            except BufferError:  # a view is still referenced: try again later
                keep.append(region)
        self._closing = keep

    @property
    def mapped(self) -> int:
        """Regions still mapped (registered, or unregistered and awaiting their users)."""
        with self._lock:
            self._collect()
            return len(self._regions) + len(self._closing)

    def close(self) -> None:
        self.unregister(None)
