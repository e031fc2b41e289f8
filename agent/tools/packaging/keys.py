"""Signing keys for packages: ``<key_id>.key`` (private PEM, 0600) and ``<key_id>.pub``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.core.durable import write_chunk
from agent.core.errors import ConfigError
from agent.wire.keys import generate_keypair

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"


@dataclass(frozen=True, kw_only=True)
class KeyFiles:
    key_id: str
    private: Path
    public: Path
    public_b64: str  # the form a Greengrass configuration's trust store takes


def keys_generate(out_dir: Path, key_id: str) -> KeyFiles:
    """Write a new Ed25519 key pair; never overwrites an existing file."""
    pair = generate_keypair(key_id)
    private = out_dir / f"{pair.key_id}{PRIVATE_SUFFIX}"
    public = out_dir / f"{pair.key_id}{PUBLIC_SUFFIX}"
    for path in (private, public):
        if path.exists():
            raise ConfigError(f"{path} already exists; pick another key id or directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_new(private, pair.private_pem, mode=0o600)
        _write_new(public, pair.public_pem, mode=0o644)
    except OSError as err:
        private.unlink(missing_ok=True)
        raise ConfigError(f"cannot write keys to {out_dir}: {err.strerror or err}") from err
    return KeyFiles(key_id=pair.key_id, private=private, public=public,
                    public_b64=pair.public_b64)


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    # O_EXCL with the final mode: the private key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; 0600 must be exact
        write_chunk(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
