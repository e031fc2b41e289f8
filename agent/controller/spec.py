"""Rollout specs: what to roll out, to whom, how fast, and when to stop.

A spec is YAML or JSON (``load_spec``)::

    name: digits-v2-2024-06          # also the rollout id the devices see
    model: digits-v2                 # the candidate's model label (its model_version)
    packages: {rasp4b: {url: https://..., sha256: <64 hex>, version: 7},
               onnx: {url: https://..., sha256: <64 hex>, version: 7}}   # by Neo target
    groups: [kitchen, garage]
    strategy: {type: canary, percent: 10, bake_s: 600, then: linear,
               linear_steps: 3, step_interval_s: 300}
    shadow: {duration_s: 900, sample_rate: 0.2}      # optional, before the strategy
    #   with capture: {sample_rate: 0, disagreement: true}: capture rules for its devices
    weights: [10, 50, 100]                            # optional green ramp per step
    guardrails: {min_samples: 500, max_p99_ratio: 1.5, min_agreement: off}  # optional
    timing: {step_timeout_s: 600, stale_after_s: 60}

**Guardrails default per key.** Every limit has a fleet-wide default
(:class:`GuardrailSpec`) and a ``guardrails:`` block overrides only the keys it
names: ``{min_samples: 50}`` still checks the p99 ratio, the error rate, the
agreement and install failures at their defaults. A limit written as ``null``
(``~``) or ``off`` is disabled (stored as None). ``max_p99_us``,
``max_soc_temp_c`` and ``max_rss_bytes`` depend on the model and the hardware,
so they have no default and are checked only when a spec sets them. The
qualifiers ``min_samples``, ``min_devices``, ``min_p99_excess_us``,
``install_failure_min_devices`` and ``breach_quorum`` cannot be switched off. Leaving the block out
(or empty) means every default; :func:`effective_guardrails` says, per limit,
what applies and where it came from.

**Agreement with labels, and an accuracy gain.** ``min_agreement`` compares green's
top-1 with blue's (``agreement_with: blue``, the default), which a model that is better
than blue fails on purpose. Where the devices check their inferences against labels (a
labelled replay: ``checked_total`` / ``correct_total`` per variant),
``agreement_with: labels`` judges green's agreement with the labels instead: its top-1
accuracy, so ``min_agreement: 0.9`` then means "green is right on 90% of the labelled
inferences". ``min_accuracy_gain`` (default off) is a promotion condition, not a breach:
a step advances only once green's labelled accuracy beats blue's (the concurrent blue,
or the same devices' blue from before they switched) by at least this much in every
scope; until then (or while either accuracy is unknown) the step holds, and pauses for
an operator at ``step_timeout_s``. For example, promote a retrained model only because
it is better on the field's data::

    guardrails: {agreement_with: labels, min_agreement: 0.8, min_accuracy_gain: 0.1}

A spec stored with ``model_dump_json`` carries every limit explicitly (disabled
ones as ``null``), so a rollout resumed from the controller's database keeps the
limits it started with even if the defaults change later.

**Packages.** ``packages`` maps a key to one signed package: a device takes the one of
its Neo target (``rasp4b``, ``linux_x86_64``, ...: a DLR package built for it), or,
when the device serves with the ONNX backend (it registers with ``backend: onnx``), the
one under ``onnx`` (an ONNX package, ``edge-agent package model DIR --backend onnx``),
whatever its Neo target. Every package carries the same label, ``model``.

Every error names its field: ``strategy.steps: must be >= 1``. Checks that need
the fleet (unknown groups, a device without a package) are in
:meth:`RolloutSpec.validate_against`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from typing_extensions import Self

from agent.controller.errors import SpecError
from agent.wire.commands import CaptureRuleArgs, PackageUrl, Sha256
from agent.wire.fields import Name

if TYPE_CHECKING:
    from agent.controller.registry import FleetRegistry

Seconds = Annotated[float, Field(ge=0.0)]
STRATEGY_TYPES = ("all_at_once", "canary", "linear")


class _FieldError(ValueError):
    """A validator's error about one sub-field (pydantic would blame the whole model)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Package(_Spec):
    url: PackageUrl
    sha256: Sha256
    version: Annotated[int, Field(ge=0)]


class AllAtOnce(_Spec):
    type: Literal["all_at_once"]
    watch_s: Seconds


class Canary(_Spec):
    type: Literal["canary"]
    group: Name | None = None
    percent: Annotated[float, Field(gt=0.0, le=100.0)] | None = None
    bake_s: Seconds
    then: Literal["all", "linear"] = "all"
    linear_steps: Annotated[int, Field(ge=1)] | None = None
    step_interval_s: Seconds | None = None  # watch of each later step (default: bake_s)

    @model_validator(mode="after")
    def _one_cohort_rule(self) -> Self:
        if (self.group is None) == (self.percent is None):
            raise _FieldError("percent", "give exactly one of group, percent")
        if self.then == "linear" and self.linear_steps is None:
            raise _FieldError("linear_steps", "is required when then is linear")
        if self.then == "all" and self.linear_steps is not None:
            raise _FieldError("linear_steps", "only applies when then is linear")
        return self

    @property
    def later_watch_s(self) -> float:
        return self.bake_s if self.step_interval_s is None else self.step_interval_s


class Linear(_Spec):
    type: Literal["linear"]
    steps: Annotated[int, Field(ge=1)]
    step_interval_s: Seconds


Strategy = Annotated[AllAtOnce | Canary | Linear, Field(discriminator="type")]


class Shadow(_Spec):
    duration_s: Annotated[float, Field(gt=0.0)]
    sample_rate: Annotated[float, Field(gt=0.0, le=1.0)]
    # Capture rules (the ``capture`` command's, e.g. ``{sample_rate: 0, disagreement:
    # true}``: keep the inputs green and blue disagree on) sent to the shadowed devices as
    # a signed ``capture`` command when the shadow phase starts; they stay in force there
    # until the next ``capture`` command. A device whose configuration does not enable
    # capture refuses it (an ack ``rejected``), and the rollout goes on regardless.
    capture: CaptureRuleArgs | None = None


def _limit(value: object) -> object:
    """A limit may be disabled with ``null`` or ``off``."""
    # YAML 1.1 (PyYAML's safe_load) reads a bare ``off`` as False: without this, False
    # would validate as 0 and ``max_error_rate: off`` would allow no errors at all.
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    if value is True:
        raise ValueError("must be a number, null or off")
    return value


def _qualifier(least: str) -> BeforeValidator:
    """A condition of the other limits (how much data, how big a difference): never off."""
    def check(value: object) -> object:
        if value is None or value is False or \
                (isinstance(value, str) and value.strip().lower() == "off"):
            raise ValueError(f"cannot be off (it qualifies other limits; {least})")
        if value is True:
            raise ValueError("must be a number")
        return value
    return BeforeValidator(check)


Limit = BeforeValidator(_limit)


class GuardrailSpec(_Spec):
    """Fleet guardrails. A key left out takes its default; ``None`` (``null`` or ``off``
    in the spec) is a limit that is not checked."""

    # green inferences per class / group before latency, error and agreement are judged
    min_samples: Annotated[int, Field(ge=1), _qualifier("1 is the least")] = 200
    min_devices: Annotated[int, Field(ge=1), _qualifier("1 is the least")] = 1
    max_p99_us: Annotated[Annotated[float, Field(gt=0.0)] | None, Limit] = None
    max_p99_ratio: Annotated[Annotated[float, Field(gt=0.0)] | None, Limit] = 2.0  # green/blue
    # A ratio breach also needs green's p99 this far above blue's: for a model that runs in
    # microseconds, scheduler jitter on a busy device moves the ratio on its own.
    min_p99_excess_us: Annotated[float, Field(ge=0.0), _qualifier("0 is the least")] = 500.0
    max_error_rate: Annotated[Annotated[float, Field(ge=0.0, le=1.0)] | None, Limit] = 0.01
    min_agreement: Annotated[Annotated[float, Field(ge=0.0, le=1.0)] | None, Limit] = 0.9
    max_soc_temp_c: Annotated[float | None, Limit] = None
    max_rss_bytes: Annotated[Annotated[int, Field(gt=0)] | None, Limit] = None
    install_failure_pct: Annotated[Annotated[float, Field(ge=0.0, le=100.0)] | None,
                                   Limit] = 20.0
    install_failure_min_devices: Annotated[int, Field(ge=1),
                                           _qualifier("1 is the least")] = 1
    # devices whose reports about themselves (a local breach or rollback, their own
    # temperature or RSS) it takes to roll back fleet-wide (agent.controller.breach_quorum)
    breach_quorum: Annotated[int, Field(ge=1), _qualifier("1 is the least")] = 2
    # what min_agreement compares green's top-1 with: blue's, or the labels of the
    # devices' labelled checks (then it is green's accuracy)
    agreement_with: Literal["blue", "labels"] = "blue"
    # a step advances only once green's labelled accuracy beats blue's by this much
    min_accuracy_gain: Annotated[Annotated[float, Field(ge=-1.0, le=1.0)] | None, Limit] = None


def effective_guardrails(g: GuardrailSpec) -> list[str]:
    """One line per limit, in declaration order, saying what applies and why:
    ``max_p99_ratio: 2.0 (default)``, ``min_samples: 50 (spec)``,
    ``min_agreement: off (disabled in the spec)``, ``max_p99_us: not set``."""
    lines = []
    for name in GuardrailSpec.model_fields:
        value = getattr(g, name)
        from_spec = name in g.model_fields_set
        if value is None:
            lines.append(f"{name}: off (disabled in the spec)" if from_spec
                         else f"{name}: not set")
        else:
            lines.append(f"{name}: {value} ({'spec' if from_spec else 'default'})")
    return lines


class Timing(_Spec):
    step_timeout_s: Annotated[float, Field(gt=0.0)] = 600.0
    stale_after_s: Annotated[float, Field(gt=0.0)] = 60.0


class RolloutSpec(_Spec):
    name: Name
    model: Name
    packages: Annotated[dict[Name, Package], Field(min_length=1)]  # by Neo target, or onnx
    groups: Annotated[list[Name], Field(min_length=1)]
    strategy: Strategy
    shadow: Shadow | None = None
    weights: list[Annotated[int, Field(ge=0, le=100)]] | None = None
    guardrails: GuardrailSpec = Field(default_factory=GuardrailSpec)
    timing: Timing = Field(default_factory=Timing)

    @field_validator("groups")
    @classmethod
    def _distinct_groups(cls, groups: list[str]) -> list[str]:
        for i, group in enumerate(groups):
            if group in groups[:i]:
                raise _FieldError(f"[{i}]", f"{group!r} is listed twice")
        return groups

    @field_validator("guardrails", mode="before")
    @classmethod
    def _guardrails_block(cls, value: object) -> object:
        if value is None:
            return {}  # ``guardrails:`` with nothing under it: every default
        if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
            raise ValueError("cannot be off as a whole (disable single limits with off)")
        return value

    @field_validator("weights")
    @classmethod
    def _ramp(cls, weights: list[int] | None) -> list[int] | None:
        if weights is None:
            return None
        if not weights:
            raise ValueError("must hold at least one weight (the last is 100)")
        for i in range(1, len(weights)):
            if weights[i] <= weights[i - 1]:
                raise _FieldError(f"[{i}]", f"must be above the previous weight {weights[i - 1]}")
        if weights[-1] != 100:
            raise _FieldError(f"[{len(weights) - 1}]", "the last weight must be 100")
        if weights[0] == 0:
            raise _FieldError("[0]", "must be above 0 (green must take some traffic)")
        return weights

    @model_validator(mode="after")
    def _canary_group_targeted(self) -> Self:
        strategy = self.strategy
        if isinstance(strategy, Canary) and strategy.group is not None \
                and strategy.group not in self.groups:
            raise _FieldError("strategy.group",
                              f"{strategy.group!r} must be one of groups {self.groups}")
        return self

    def validate_against(self, fleet: FleetRegistry) -> None:
        """Raise :class:`SpecError` if a group is unknown to ``fleet`` or a package key
        (a Neo target, or ``onnx``) of the targeted devices has no package."""
        known = fleet.known_groups()
        for i, group in enumerate(self.groups):
            if group not in known:
                raise SpecError(f"unknown group {group!r}", field=f"groups[{i}]")
        missing: dict[str, list[str]] = {}
        for device in fleet.devices_in(self.groups):
            if device.package_key not in self.packages:
                missing.setdefault(device.describe_key(), []).append(device.thing)
        if missing:
            key, things = sorted(missing.items())[0]
            raise SpecError(f"no package for {key} ({len(things)} device(s), "
                            f"e.g. {sorted(things)[0]})", field="packages")


def parse_spec(data: object) -> RolloutSpec:
    """Validate already-parsed data; errors become :class:`SpecError` naming the field."""
    try:
        return RolloutSpec.model_validate(data)
    except ValidationError as err:
        raise _spec_error(err) from err


def load_spec(path: str | Path) -> RolloutSpec:
    """Read a YAML or JSON spec file (JSON is YAML, but ``.json`` files parse strictly)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read rollout spec {path}: {err}") from err
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise SpecError(f"{path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {err}") \
            from err
    return parse_spec(data)


def _spec_error(err: ValidationError) -> SpecError:
    problems = [_describe(error) for error in err.errors()]
    field, message = problems[0]
    if len(problems) > 1:
        message += "; " + "; ".join(f"{f}: {m}" if f else m for f, m in problems[1:])
    return SpecError(message, field=field)


def _describe(error: Any) -> tuple[str, str]:
    loc: Sequence[int | str] = error["loc"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    kind: str = error["type"]
    cause = ctx.get("error")
    path = _path(loc)
    if isinstance(cause, _FieldError):
        sub = cause.field
        path = f"{path}{sub}" if sub.startswith("[") else ".".join(p for p in (path, sub) if p)
        return path, str(cause)
    messages = {
        "greater_than_equal": "must be >= {ge}",
        "greater_than": "must be > {gt}",
        "less_than_equal": "must be <= {le}",
        "less_than": "must be < {lt}",
        "missing": "is required",
        "extra_forbidden": "is not a known field",
        "literal_error": "must be {expected}",
        "string_pattern_mismatch": "must match {pattern}",
        "too_short": "must hold at least {min_length} item(s)",
        "union_tag_invalid": "type must be one of {expected_tags}",
        "union_tag_not_found": "needs a type ({discriminator})",
    }
    if kind == "value_error" and cause is not None:
        return path, str(cause)
    template = messages.get(kind)
    if template is not None:
        # "must be <= 1", not "<= 1.0": the spec's author wrote the bound as a number
        shown = {k: int(v) if isinstance(v, float) and v.is_integer() else v
                 for k, v in ctx.items()}
        try:
            return path, template.format(**shown)
        except (KeyError, IndexError):
            pass
    return path, str(error["msg"])


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    previous: int | str | None = None
    for part in loc:
        if previous == "strategy" and part in STRATEGY_TYPES:
            previous = part
            continue  # the discriminator tag pydantic adds is not a field
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
        previous = part
    return out
