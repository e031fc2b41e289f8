"""The optional extras a command needs, and the message that names a missing one.

The default install (``pip install edge-inference-agent``) is what a device runs: ``serve``,
``run``, ``device``. The rest comes with an extra:

    controller   matplotlib: the PNG timeline of ``rollout report``
    tools        amqtt: the demos and the embedded broker (``fleet ... --embedded``,
                 ``serve --embedded-broker``); the build backend that lets
                 ``package component`` build the agent's wheel offline
    models       scikit-learn and onnx: ``models build``
    images       Pillow: image files as model input (``predict --input photo.png``)
    s3           boto3: capture uploads to S3, ``capture pull --from s3://...``

A command that always needs an extra is listed in :data:`COMMAND_EXTRAS` and checked
before it starts (:func:`require_extras`); any other command that reaches a module of a
missing extra is reported the same way, from the ImportError (:func:`missing_extra`).
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence

DISTRIBUTION = "edge-inference-agent"

# The top-level modules each extra brings, as imported (not as distributions are named).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "controller": ("matplotlib",),
    "tools": ("amqtt",),
    "models": ("sklearn", "onnx", "threadpoolctl"),
    "images": ("PIL",),
    "s3": ("boto3", "botocore"),
}

# Commands (their leading words) that cannot do anything without an extra.
COMMAND_EXTRAS: dict[tuple[str, ...], str] = {
    ("demo",): "tools",
    ("models", "build"): "models",
}


def command_words(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, ...]:
    """The words of the command ``args`` was parsed for: ``("demo", "fleet")``."""
    words: list[str] = []
    current = parser
    while True:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return tuple(words)
        name = getattr(args, subs[0].dest, None)
        if not isinstance(name, str) or name not in subs[0].choices:
            return tuple(words)
        words.append(name)
        current = subs[0].choices[name]


def extra_of_module(module: str) -> str | None:
    """The extra that brings the top-level module of ``module`` (dotted name), if any."""
    top = module.split(".")[0]
    return next((extra for extra, modules in EXTRA_MODULES.items() if top in modules), None)


def needs_extra_message(words: Sequence[str], extra: str) -> str:
    """``edge-agent demo fleet needs the "tools" extra: pip install '...[tools]'``."""
    command = " ".join(("edge-agent", *words))
    return f"{command} needs the \"{extra}\" extra: pip install '{DISTRIBUTION}[{extra}]'"


def require_extras(words: Sequence[str]) -> None:
    """Raise ModuleNotFoundError (named for the missing module) when the command ``words``
    always needs an extra that is not installed."""
    for prefix, extra in COMMAND_EXTRAS.items():
        if tuple(words[:len(prefix)]) != prefix:
            continue
        for module in EXTRA_MODULES[extra]:
            if importlib.util.find_spec(module) is None:
                raise ModuleNotFoundError(f"No module named {module!r}", name=module)


def missing_extra(words: Sequence[str], err: BaseException) -> str | None:
    """The message naming the extra whose missing module caused ``err`` (an ImportError, or
    an error raised from one), or None when no extra would help."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ImportError) and current.name:
            extra = extra_of_module(current.name)
            if extra is not None:
                return needs_extra_message(words, extra)
        current = current.__cause__ or current.__context__
    return None
