"""What the capture store does when it opens: whatever a kill left, it repairs.

- Temp files (``*.tmp``: a capture or a manifest being written) and ``.trash`` trees (a
  batch being deleted) are deleted: neither holds a capture ``put`` reported as stored.
- Every file in ``open/`` is read and decoded; one that is not a whole capture of the
  name it has (it cannot come from a kill: files are renamed in whole) is moved to
  ``quarantine/``, as is anything else found there.
- A batch directory with ``batch.json`` is read (its manifest checked against it, not
  its files: the uploader verifies those before sending); one that does not read is
  quarantined. A batch directory without ``batch.json`` is a seal cut short: it is
  sealed again with the captures in it (each a whole file), or removed when empty.
- ``quarantine/`` is listed with its sizes (a stray file there is deleted).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from agent.device.capture.batches import (
    BATCH_FILE,
    BATCH_ID,
    MANIFEST_FILE,
    SealEntry,
    disk_bytes,
    new_batch_id,
    read_batch,
    seal,
)
from agent.device.capture.errors import CaptureFormatError
from agent.device.capture.record import decode
from agent.device.capture.store_files import (
    BATCHES_DIR,
    OPEN_DIR,
    OPEN_NAME,
    QUARANTINE_DIR,
    OpenCapture,
    SealedBatch,
    drop_leftovers,
    quarantine_into,
)


@dataclass
class Recovered:
    """The store's contents found at open, oldest first; ``quarantined`` is (name, bytes)
    of each quarantine entry, ``moved`` how many entries this open quarantined."""

    open: list[OpenCapture] = field(default_factory=list)
    sealed: list[SealedBatch] = field(default_factory=list)
    quarantined: list[tuple[str, int]] = field(default_factory=list)
    moved: int = 0
    repaired: int = 0
    removed: int = 0


def _read_capture(path: Path, capture_id: str) -> tuple[dict[str, object], str, int, float]:
    """(meta, sha256, size, time) of the capture file ``path``; CaptureFormatError."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CaptureFormatError(f"cannot be read: {err}") from err
    capture = decode(data)
    if capture.capture_id != capture_id:
        raise CaptureFormatError(f"holds capture {capture.capture_id}, not {capture_id}")
    return capture.meta(), hashlib.sha256(data).hexdigest(), len(data), capture.time


def _open_captures(directory: Path, now: float, bad: list[tuple[Path, str]]
                   ) -> list[OpenCapture]:
    found = []
    for path in sorted(directory.iterdir()):
        match = OPEN_NAME.match(path.name)
        if match is None or path.is_symlink() or not path.is_file():
            bad.append((path, "not a capture file of the store"))
            continue
        try:
            meta, sha, size, when = _read_capture(path, match.group(2))
        except CaptureFormatError as err:
            bad.append((path, str(err)))
            continue
        found.append(OpenCapture(seq=int(match.group(1)), path=path, meta=meta, sha256=sha,
                                 size=size, added=min(now, when)))
    return found


def _repair(directory: Path, *, thing: str, model: str, now: float,
            bad: list[tuple[Path, str]], found: Recovered) -> SealedBatch | None:
    """Complete the seal of ``directory`` (no batch.json); None when it held no capture."""
    drop_leftovers(directory)
    (directory / MANIFEST_FILE).unlink(missing_ok=True)
    entries = []
    for path in sorted(directory.iterdir()):
        capture_id = path.name.removesuffix(".npz")
        if not path.name.endswith(".npz") or path.is_symlink() or not path.is_file():
            bad.append((path, "not a capture file of the store"))
            continue
        try:
            meta, sha, size, _when = _read_capture(path, capture_id)
        except CaptureFormatError as err:
            bad.append((path, str(err)))
            continue
        entries.append(SealEntry(path=path, meta=meta, sha256=sha, size=size))
    bad_here = tuple(p for p, _ in bad if p.parent == directory)
    if bad_here:  # out of the batch before it is sealed: a sealed batch has no extra file
        quarantine_into(directory.parent.parent / QUARANTINE_DIR, new_batch_id(now),
                        _reasons(bad, bad_here), files=bad_here)
        found.moved += 1
        bad[:] = [(p, r) for p, r in bad if p.parent != directory]
    if not entries:
        return None
    info = seal(directory, entries, thing=thing, model=model, created=now)
    return SealedBatch(info=info, disk=disk_bytes(directory))


def _reasons(bad: list[tuple[Path, str]], paths: tuple[Path, ...]) -> str:
    return "\n".join(f"{p.parent.name}/{p.name}: {reason}" for p, reason in bad
                     if p in paths)


def recover(root: Path, *, thing: str, model: str, now: float) -> Recovered:
    """Open the store at ``root`` (see the module's documentation). Raises OSError when
    the directories cannot be created or read."""
    dirs = {name: root / name for name in (OPEN_DIR, BATCHES_DIR, QUARANTINE_DIR)}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    found = Recovered()
    found.removed = sum(drop_leftovers(path) for path in dirs.values())
    bad: list[tuple[Path, str]] = []
    found.open = _open_captures(dirs[OPEN_DIR], now, bad)
    for path in sorted(dirs[BATCHES_DIR].iterdir()):
        if not BATCH_ID.match(path.name) or path.is_symlink() or not path.is_dir():
            bad.append((path, "not a batch of the store"))
        elif (path / BATCH_FILE).exists():
            try:
                info, _lines = read_batch(path)
            except CaptureFormatError as err:
                quarantine_into(dirs[QUARANTINE_DIR], path.name, str(err), directory=path)
                found.moved += 1
                continue
            found.sealed.append(SealedBatch(info=info, disk=disk_bytes(path)))
        else:
            repaired = _repair(path, thing=thing, model=model, now=now, bad=bad,
                               found=found)
            found.repaired += 1
            if repaired is not None:
                found.sealed.append(repaired)
            else:
                path.rmdir()  # held no capture (anything else was moved to quarantine)
    if bad:
        quarantine_into(dirs[QUARANTINE_DIR], new_batch_id(now),
                        _reasons(bad, tuple(p for p, _ in bad)),
                        files=tuple(p for p, _ in bad))
        found.moved += 1
    found.sealed.sort(key=lambda b: (b.info.created, b.info.batch_id))
    for path in dirs[QUARANTINE_DIR].iterdir():
        if path.is_symlink() or not path.is_dir():
            path.unlink()  # the store quarantines directories only
    found.quarantined = sorted((p.name, disk_bytes(p)) for p in dirs[QUARANTINE_DIR].iterdir()
                               if p.is_dir() and not p.is_symlink())
    return found
