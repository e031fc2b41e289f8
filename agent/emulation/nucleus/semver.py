"""Semantic versions and the ``VersionRequirement`` ranges of recipe dependencies.

A requirement is one or more ``||``-separated alternatives, each a space-separated list
of comparators that must all hold: ``>=1.0.0 <2.0.0``, ``=1.2.3``, ``1.2.3`` (exactly),
``^1.2.0`` (same major), ``~1.2.0`` (same minor), ``1.2.*`` / ``1.x`` / ``*`` (wildcards).
Pre-release versions (``1.0.0-rc.1``) sort below their release, as semver orders them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from agent.emulation.nucleus.errors import RecipeError

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?")
_PARTIAL = re.compile(r"v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?")
_COMPARATOR = re.compile(r"(>=|<=|>|<|=|\^|~)?(.+)")


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION.fullmatch(text.strip())
        if match is None:
            raise RecipeError(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH)")
        pre = tuple(int(p) if p.isdigit() else p for p in (match.group(4) or "").split(".") if p)
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3)), pre)

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        pre = tuple((0, p) if isinstance(p, int) else (1, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        pre = "-" + ".".join(str(p) for p in self.prerelease) if self.prerelease else ""
        return f"{self.major}.{self.minor}.{self.patch}{pre}"


Bound = tuple[str, Version]  # (operator among >=, >, <=, <, =; version)


def _padded(numbers: list[int]) -> Version:
    major, minor, patch = [*numbers, 0, 0, 0][:3]
    return Version(major, minor, patch)


def _expand(operator: str, text: str, requirement: str) -> list[Bound]:
    """One comparator as plain bounds: ``^``, ``~`` and partial versions become ranges."""
    if _VERSION.fullmatch(text) and operator not in ("^", "~"):
        return [(operator or "=", Version.parse(text))]
    partial = _PARTIAL.fullmatch(text)
    if _VERSION.fullmatch(text):
        low = Version.parse(text)
        numbers = [low.major, low.minor, low.patch]
    elif partial is not None:
        numbers = []
        for part in partial.groups():
            if part is None or not part.isdigit():
                break
            numbers.append(int(part))
        low = _padded(numbers)
    else:
        raise RecipeError(f"version requirement {requirement!r}: cannot read {text!r}")
    if not numbers:
        return []  # '*': any version
    if operator in (">=", ">", "<=", "<"):
        return [(operator, low)]
    if operator == "^":
        depth = next((i + 1 for i, n in enumerate(numbers) if n), len(numbers))
    elif operator == "~":
        depth = min(len(numbers), 2)
    else:  # '1.2', '=1.2', '1.2.x'
        depth = len(numbers)
    high = numbers[:depth]
    high[-1] += 1
    return [(">=", low), ("<", _padded(high))]


def _holds(version: Version, bound: Bound) -> bool:
    operator, other = bound
    return {">=": version >= other, ">": version > other, "<=": version <= other,
            "<": version < other, "=": version == other}[operator]


def satisfies(version: Version | str, requirement: str) -> bool:
    """Whether ``version`` meets ``requirement`` (an empty requirement is any version)."""
    if isinstance(version, str):
        version = Version.parse(version)
    for alternative in requirement.split("||"):
        # '>= 1.0.0' is read as '>=1.0.0'
        tokens = re.sub(r"(>=|<=|>|<|=|\^|~)\s+", r"\1", alternative.strip()).split()
        bounds: list[Bound] = []
        for token in tokens:
            match = _COMPARATOR.fullmatch(token)
            assert match is not None
            bounds.extend(_expand(match.group(1) or "", match.group(2), requirement))
        if all(_holds(version, bound) for bound in bounds):
            return True
    return False
