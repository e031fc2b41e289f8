"""The strict JSON reader of ``manifest.json``: one byte string, one meaning.

A manifest's signature covers the canonical JSON (:mod:`agent.wire.canonical`) of the
object this reader returns, so the reader refuses everything two JSON parsers could read
differently, or that the canonical form cannot say exactly:

- a duplicate key in any object (top level, ``files``, ``golden``, tensor specs...);
- ``NaN``, ``Infinity``, ``-Infinity``, and a number that overflows a double (``1e400``);
- an integer outside the signed 64-bit range (``2**64``, ``10**400``); its digits are
  counted before any conversion, so ten thousand of them cost nothing;
- text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, which the
  canonical form would write as ``?``: two manifests with one signature);
- nesting deeper than ``max_depth`` (a manifest is about six levels deep).

Each refusal is a :class:`~agent.device.packages.errors.PackageFormatError` naming where
in the manifest it is, e.g. ``manifest.json: golden.inputs.0.input.3: ...``.

Whitespace, key order and string escapes carry no meaning here: a manifest written
with indentation or its keys in another order is the same object and its signature
verifies; a signature over anything but the canonical form (for example over the file's
own, non-canonical bytes) does not.
"""

from __future__ import annotations

import json
import math
from typing import Any

from agent.device.packages.errors import PackageFormatError

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_DEPTH = 32  # containers inside containers; a real manifest has about six
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT64_DIGITS = 19


class _Refused:
    """Stands in the parsed object for a value the reader refuses; reported with its path."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def parse_manifest_json(raw: bytes, *, max_depth: int = MAX_MANIFEST_DEPTH) -> dict[str, Any]:
    """The manifest's JSON object; :class:`PackageFormatError` for anything else (see the
    module docstring), naming the field."""
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys,
                         parse_int=_int64, parse_float=_finite_float,
                         parse_constant=_no_constant)
    except UnicodeDecodeError as err:
        raise PackageFormatError(f"{MANIFEST_NAME} is not UTF-8") from err
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise PackageFormatError(f"{MANIFEST_NAME} is not usable JSON: {err}") from err
    _check_values(obj, max_depth)
    if not isinstance(obj, dict):
        raise PackageFormatError(f"{MANIFEST_NAME} is a JSON {type(obj).__name__}, not an object")
    return obj


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Refused:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return _Refused(f"duplicate key {_shown(key)}")
        seen.add(key)
    raise AssertionError("unreachable: fewer keys than pairs means a duplicate")


def _int64(text: str) -> int | _Refused:
    digits = len(text.lstrip("-"))
    if digits > _INT64_DIGITS:
        return _Refused(f"an integer of {digits} digits is outside the signed 64-bit range")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        return _Refused(f"the integer {value} is outside the signed 64-bit range")
    return value


def _finite_float(text: str) -> float | _Refused:
    value = float(text)
    if not math.isfinite(value):
        return _Refused(f"the number {_shown(text)} is out of range for a double")
    return value


def _no_constant(name: str) -> _Refused:
    return _Refused(f"{name} is not a JSON number")


def _check_values(root: Any, max_depth: int) -> None:
    """Raise for a refused value, invalid text or over-deep container under ``root``,
    walking without recursion (the parser accepts nesting deep enough that a recursive
    walk, or the canonical encoder, could run out of stack)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(root, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Refused):
            _refuse(path, value.reason)
        elif isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, dict | list):
            if len(path) >= max_depth:
                _refuse(path, f"nested deeper than {max_depth} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key, path)
                if isinstance(item, _Refused | str | dict | list):  # numbers are checked
                    stack.append((item, (*path, str(key))))


def _check_text(text: str, path: tuple[str, ...]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        _refuse(path, f"text {_shown(text)} is not valid Unicode (a lone surrogate)")


def _refuse(path: tuple[str, ...], reason: str) -> None:
    where = ".".join(path) or "manifest"
    raise PackageFormatError(f"{MANIFEST_NAME}: {_shown(where, quote=False)}: {reason}")


def _shown(text: str, *, quote: bool = True, limit: int = 80) -> str:
    """``text`` for a message: escaped (no control characters, no surrogates), cut short."""
    shown = ascii(text) if quote else ascii(text)[1:-1]
    return shown if len(shown) <= limit else shown[:limit] + "..."
