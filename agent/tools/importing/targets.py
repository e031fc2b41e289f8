"""Which Neo target an imported artifact is for, from every place that says so.

The target may be stated by the source's ``TARGET=`` prefix (else the global ``--target``),
by ``compiled.meta``'s ``Requirements.TargetDevice`` and by a Neo ``manifest``; each is
parsed with :func:`~agent.device.platform.targets.parse_target` (SageMaker spellings such as
``ml_c5`` or ``ML_M4``). Statements that name different device targets are an error naming
both. The ELF architecture of every shared object must be the target's: a mismatch names
the statement and the file (``--target rasp4b is aarch64 code, compiled.so is x86_64``).
With no statement at all, the ELF architecture gives the generic ``linux_<arch>`` target.

Jetson code names its JetPack line: the target's own (:attr:`NeoTarget.jetpack`) unless
``--jetpack`` is given; a ``linux_arm64_nvidia`` artifact (a Jetson's GPU code under a
generic name) needs ``--jetpack``, since nothing else says which CUDA it was built for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.core.errors import AgentError, ConfigError
from agent.device.platform.boards import generic_target, normalize_jetpack
from agent.device.platform.targets import NEO_TARGETS, NeoTarget, ParsedTarget, parse_target
from agent.tools.importing.errors import ImportTargetError


@dataclass(frozen=True)
class Claim:
    """One statement of the target: where it was made and what it said."""

    where: str  # e.g. "--target", "ml_c5= prefix", "compiled.meta Requirements.TargetDevice"
    given: str


@dataclass(frozen=True)
class ResolvedTarget:
    """The device target of one imported artifact."""

    target: NeoTarget
    arch: str
    neo_target: str | None  # as Neo (or the user) spelt it, lower case; None when inferred
    jetpack: str | None


def parse_named(name: str, where: str) -> ParsedTarget:
    """:func:`parse_target`, with its error naming where ``name`` was given."""
    try:
        return parse_target(name)
    except ConfigError as err:
        raise ImportTargetError(f"{where}: {err}") from err


def check_jetpack(jetpack: str | None) -> str | None:
    """The JetPack line of a ``--jetpack`` value, or an error for one that is none."""
    if jetpack is None:
        return None
    line = normalize_jetpack(jetpack)
    if line is None:
        raise ImportTargetError(f"--jetpack {jetpack!r}: not a JetPack version such as 4.6 "
                                "or 5.1.2")
    return line


def resolve_target(*, source: str, claims: Sequence[Claim], elf: Sequence[tuple[str, str]],
                   jetpack: str | None) -> ResolvedTarget:
    """Reconcile ``claims`` with the ELF architectures ``elf`` ((file name, arch) pairs,
    the kernels first) for the artifact of ``source``."""
    (kernels_name, arch), *others = elf
    for name, other in others:
        if other != arch:
            raise ImportTargetError(f"{source}: {kernels_name} is {arch} code, {name} is "
                                    f"{other}")
    parsed = [(claim, parse_named(claim.given, f"{source}: {claim.where} {claim.given!r}"))
              for claim in claims]
    if parsed:
        return _stated(source, parsed, kernels_name, arch, jetpack)
    try:
        inferred = NEO_TARGETS[generic_target(arch)]
    except AgentError as err:
        raise ImportTargetError(f"{source}: {kernels_name} is {arch} code, which no Neo "
                                "target this agent knows runs") from err
    return ResolvedTarget(target=inferred, arch=arch, neo_target=None,
                          jetpack=_jetpack_of(source, inferred, None, jetpack))


def _stated(source: str, parsed: Sequence[tuple[Claim, ParsedTarget]], kernels_name: str,
            arch: str, jetpack: str | None) -> ResolvedTarget:
    (first, chosen), *rest = parsed
    for claim, other in rest:
        if (other.target, other.accelerator) != (chosen.target, chosen.accelerator):
            raise ImportTargetError(
                f"{source}: {first.where} {first.given} and {claim.where} {claim.given} name "
                f"different targets ({_describe(chosen)} and {_describe(other)})")
    if chosen.target.arch != arch:
        raise ImportTargetError(f"{source}: {first.where} {first.given} is "
                                f"{chosen.target.arch} code, {kernels_name} is {arch}")
    return ResolvedTarget(target=chosen.target, arch=arch,
                          neo_target=first.given.strip().lower(),
                          jetpack=_jetpack_of(source, chosen.target, chosen.accelerator,
                                              jetpack))


def emulation_target(name: str, host: str, jetpack: str | None) -> ResolvedTarget:
    """The target of an ``--emulate NAME`` artifact: host code on behalf of NAME's board."""
    parsed = parse_named(name, f"--emulate {name!r}")
    if parsed.target.arch == host:
        raise ImportTargetError(f"--emulate {name}: {parsed.target.name} is {host} code "
                                "already; import its artifact as a source instead")
    return ResolvedTarget(target=parsed.target, arch=host, neo_target=None,
                          jetpack=_jetpack_of(f"--emulate {name}", parsed.target,
                                              parsed.accelerator, jetpack))


def _jetpack_of(source: str, target: NeoTarget, accelerator: str | None,
                jetpack: str | None) -> str | None:
    if target.jetpack is None and accelerator is None:
        return None
    line = jetpack or target.jetpack
    if line is None:
        raise ImportTargetError(f"{source}: {target.name} with the {accelerator} accelerator "
                                "is Jetson GPU code: give --jetpack X.Y, the JetPack line it "
                                "was compiled against")
    return line


def _describe(parsed: ParsedTarget) -> str:
    accelerator = parsed.accelerator
    if accelerator is None or accelerator == parsed.target.accelerator:
        return parsed.target.name
    return f"{parsed.target.name} with {accelerator}"
