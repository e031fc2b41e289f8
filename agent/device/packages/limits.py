"""Caps on what a device downloads and unpacks, so a hostile package cannot fill it."""

from __future__ import annotations

from dataclasses import dataclass, fields

from agent.core.errors import ConfigError

MIB = 1024**2


@dataclass(frozen=True, kw_only=True)
class PackageLimits:
    """Size, count and time limits applied while fetching and extracting one package."""

    max_archive_bytes: int = 512 * MIB  # the download, compressed
    max_manifest_bytes: int = 4 * MIB
    max_member_bytes: int = 512 * MIB  # one file, uncompressed
    max_total_bytes: int = 1024 * MIB  # all files, uncompressed
    max_members: int = 256
    fetch_timeout_s: float = 30.0  # per network operation (connect, each read)
    fetch_retries: int = 3  # further attempts after the first

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            least = 0 if field.name == "fetch_retries" else 1
            if value < least:
                raise ConfigError(f"package limit {field.name} must be >= {least}, got {value}")
