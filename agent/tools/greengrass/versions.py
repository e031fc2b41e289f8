"""Semantic versions and the npm-style ranges of a recipe's ``VersionRequirement``.

Greengrass versions components as ``major.minor.patch`` and picks a dependency's version
with an npm range: comparators joined by spaces all hold (``>=1.0.0 <2.0.0``), ``||``
separates alternatives, ``1.2.3`` / ``=1.2.3`` is that version, ``^1.2.0`` and ``~1.2.0``
are the caret and tilde ranges, ``1.x`` / ``1.2.*`` / ``1.2`` / ``*`` are partial versions
and ``1.0.0 - 1.4.0`` is a hyphen range. Pre-release versions sort before their release
(``1.0.0-rc.1 < 1.0.0``) and match only comparators that name one of the same
``major.minor.patch``. The recipe checker and the emulated nucleus's component store both
use this module; a malformed version or range is a ConfigError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from agent.core.errors import ConfigError

_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?")
_PARTIAL = re.compile(r"v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?"
                      r"(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?")
_COMPARATOR = re.compile(r"(>=|<=|>|<|=|\^|~)?\s*([^\s<>=^~]+)")


@total_ordering
@dataclass(frozen=True)
class Version:
    """A semantic version; pre-releases sort before their release, and their identifiers
    as semver orders them (numbers numerically, and below words: ``rc.2 < rc.10 < rc.a``)."""

    major: int
    minor: int
    patch: int
    release: bool = True  # False for a pre-release: sorts first
    pre: tuple[int | str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _SEMVER.fullmatch(text.strip())
        if match is None:
            raise ConfigError(f"{text!r} is not a semantic version (major.minor.patch)")
        major, minor, patch, pre = match.groups()
        return cls(int(major), int(minor), int(patch), pre is None, _pre(pre))

    @property
    def triple(self) -> tuple[int, int, int]:
        return self.major, self.minor, self.patch

    def _key(self) -> tuple[int, int, int, bool, tuple[tuple[int, int | str], ...]]:
        pre = tuple((0, p) if isinstance(p, int) else (1, p) for p in self.pre)
        return self.major, self.minor, self.patch, self.release, pre

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        pre = "-" + ".".join(str(p) for p in self.pre) if not self.release else ""
        return f"{self.major}.{self.minor}.{self.patch}{pre}"


def _pre(text: str | None) -> tuple[int | str, ...]:
    if not text:
        return ()
    return tuple(int(p) if p.isdigit() else p for p in text.split("."))


Comparator = tuple[str, Version]


def _bounds(op: str, text: str) -> list[Comparator]:
    match = _PARTIAL.fullmatch(text)
    if match is None:
        raise ConfigError(f"{text!r} is not a version or a partial version")
    parts = [p for p in match.groups()[:3] if p is not None and p not in "xX*"]
    known = len(parts)
    numbers = [int(p) for p in parts] + [0] * (3 - known)
    low = Version(numbers[0], numbers[1], numbers[2], match.group(4) is None,
                  _pre(match.group(4)))
    if known == 0:
        return [(">=", Version(0, 0, 0))] if op in ("", "=", ">=", "<=", "^", "~") else \
            [("<", Version(0, 0, 0))]
    if op in ("", "=") and known == 3:
        return [("=", low)]
    up = _bump(numbers, known - 1 if op not in ("^", "~") else _caret_level(numbers, known, op))
    if op in ("", "=", "^", "~"):
        return [(">=", low), ("<", up)]
    if known == 3:
        return [(op, low)]
    return {">": [(">=", up)], ">=": [(">=", low)], "<": [("<", low)],
            "<=": [("<", up)]}[op]


def _caret_level(numbers: list[int], known: int, op: str) -> int:
    if op == "~":
        return 0 if known == 1 else 1
    for level in range(known):  # ^: the first non-zero part may not change
        if numbers[level] != 0:
            return level
    return known - 1


def _bump(numbers: list[int], level: int) -> Version:
    major, minor, patch = numbers[:level] + [numbers[level] + 1] + [0] * (2 - level)
    return Version(major, minor, patch)


def parse_range(requirement: str) -> list[list[Comparator]]:
    """The alternatives of an npm range, each a list of comparators that must all hold."""
    alternatives: list[list[Comparator]] = []
    for alternative in requirement.split("||"):
        text = alternative.strip()
        hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", text)
        if hyphen:
            low = _bounds(">=", hyphen.group(1))
            high = _bounds("<=", hyphen.group(2))
            alternatives.append(low + high)
            continue
        unread = _COMPARATOR.sub("", text).strip()
        if unread:
            raise ConfigError(f"version requirement {requirement!r}: cannot read {unread!r}")
        comparators: list[Comparator] = []
        for op, version in _COMPARATOR.findall(text) or [("", "*")]:
            comparators += _bounds(op or "", version)
        alternatives.append(comparators)
    return alternatives


def satisfies(version: str | Version, requirement: str) -> bool:
    """Whether ``version`` is in the npm range ``requirement``."""
    v = version if isinstance(version, Version) else Version.parse(version)
    for comparators in parse_range(requirement):
        if not v.release and not any(
                not bound.release and bound.triple == v.triple for _, bound in comparators):
            continue  # a pre-release matches only a range that names its major.minor.patch
        if all(_holds(v, op, bound) for op, bound in comparators):
            return True
    return False


def _holds(v: Version, op: str, bound: Version) -> bool:
    return {"=": v == bound, ">": v > bound, ">=": v >= bound, "<": v < bound,
            "<=": v <= bound}[op]
