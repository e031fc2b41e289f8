"""Caps on what a device downloads and unpacks, so a hostile package cannot fill it."""

from __future__ import annotations

from dataclasses import dataclass, fields

from pydantic import ConfigDict
from pydantic.alias_generators import to_camel

from agent.core.errors import ConfigError

MIB = 1024**2


@dataclass(frozen=True, kw_only=True)
class PackageLimits:
    """Size, count and time limits applied while fetching and extracting one package.

    The agent's ``packageLimits`` setting holds these fields with camelCase keys
    (``maxArchiveBytes``, ``fetchDeadlineS``, ...); each one left out keeps its default."""

    __pydantic_config__ = ConfigDict(alias_generator=to_camel, populate_by_name=True,
                                     extra="forbid")

    max_archive_bytes: int = 512 * MIB  # the download, compressed
    max_manifest_bytes: int = 4 * MIB
    max_manifest_depth: int = 32  # manifest.json's nesting; a real one is about six deep
    max_member_bytes: int = 512 * MIB  # one file, uncompressed
    max_total_bytes: int = 1024 * MIB  # all files, uncompressed
    max_members: int = 256
    # Decompressed bytes per compressed byte, judged while the stream is read once more than
    # ratio_floor_bytes came out (a small, well-compressed package is never judged); real
    # weights compress far less than 200:1, a run of zeros about 1000:1.
    max_ratio: int = 200
    ratio_floor_bytes: int = 64 * MIB
    max_depth: int = 32  # path components of a member name; a real package has three or four
    max_name_bytes: int = 255  # one member's whole path, UTF-8
    max_component_bytes: int = 255  # one component of it (NAME_MAX on Linux)
    max_header_bytes: int = 64 * 1024  # one pax extended header or GNU long name, read whole
    fetch_timeout_s: float = 30.0  # per network operation (connect, each read)
    fetch_retries: int = 3  # further attempts after the first
    # The whole download, every attempt and pause between them included: a server that
    # trickles forever is cut off here. 30 minutes is 512 MiB at 300 KB/s.
    fetch_deadline_s: float = 1800.0
    # The least a download may average over any fetch_rate_window_s (after the first
    # window): a trickle of a few hundred bytes a second, or a stall after the headers,
    # is cut off within a window rather than at the deadline.
    fetch_min_bytes_per_s: int = 1024
    fetch_rate_window_s: float = 30.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            least = 0 if field.name == "fetch_retries" else 1
            if value < least:
                raise ConfigError(f"package limit {field.name} must be >= {least}, got {value}")
