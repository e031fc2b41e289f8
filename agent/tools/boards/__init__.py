"""Board trees: the files ``detect_profile`` reads on each emulated board.

Modules and their public names:


"""

from __future__ import annotations

from pathlib import Path

from agent.core.errors import ConfigError

BOARDS_DIR = Path(__file__).parent


def board_names() -> list[str]:
    return sorted(p.name for p in BOARDS_DIR.iterdir() if (p / "proc").is_dir())


def board_root(name: str) -> Path:
    """The tree of the emulated board ``name`` (e.g. ``rpi4_64``, ``jetson_nano_r32``)."""
    root = BOARDS_DIR / name
    if not (root / "proc").is_dir():
        raise ConfigError(f"unknown board {name!r}; known: {', '.join(board_names())}")
    return root
