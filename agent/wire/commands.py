"""Commands, the one message that flows down: controller -> device (or device group).

Each action has its own class with its own typed ``args``, so a handler can
``match`` on the class and read ``command.args.url`` with a checked type. The
wire form is one ``type: "command"`` message whose ``action`` picks the class::

    stage        args: url, sha256, version              fetch and verify a package as green
                       [, size_bytes, package_version]
    shadow       args: sample_rate (0..1)                copy that share of inputs to green
    set_weights  args: blue, green (0..100, sum 100)     weighted split between the variants
    promote      args: {}                                green becomes blue, on trial
    confirm      args: {}                                the rollout succeeded: end the trial
                                                         of the model it promoted
    rollback     args: {}                                undo what this rollout did on the
                                                         device (nothing of it: a no-op)
    status       args: {}                                answer with a ``state`` report
    announce     args: {}                                send a ``register`` now (discovery
                                                         by a controller started later)
    capture      args: enabled, rules                    the capture rules in force (see
                       [, budget_bytes, max_per_hour]    :class:`CaptureArgs`)

``stage`` is refused unless the signed manifest's label is ``version`` (and, when
given, its integer version is ``package_version``). ``rollback`` and ``confirm``
act only on what the command's own rollout staged or promoted, so a late rollback
of a rollout the device refused never undoes an earlier, successful one.

``command_id`` names the command; ``id`` names this transmission of it (a
controller that re-sends a command re-signs it under a new ``id``). Commands are
signed (see :mod:`agent.wire.signing`): ``signature`` covers the canonical
JSON of every other field, ``key_id`` included. ``issued_at`` is the
controller's clock: informational, never used to judge staleness.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from typing_extensions import Self

from agent.wire.fields import (
    Count,
    GroupName,
    MessageId,
    Name,
    Percent,
    Schema,
    Seq,
    UnixMillis,
    new_message_id,
)

CommandAction = Literal["stage", "shadow", "set_weights", "promote", "confirm", "rollback",
                        "status", "announce", "capture"]
PackageUrl = Annotated[str, Field(pattern=r"^(https|http|s3|file)://\S+$", max_length=2048)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
SignatureText = Annotated[str, Field(min_length=1, max_length=256)]


class Target(Schema):
    """Who a command is for: one thing, or every member of a thing group."""

    kind: Literal["thing", "group"]
    name: GroupName


class Weights(Schema):
    """Share of live traffic per variant, in percent."""

    blue: Percent
    green: Percent

    @model_validator(mode="after")
    def _sum_to_100(self) -> Self:
        if self.blue + self.green != 100:
            raise ValueError(f"blue + green must be 100, not {self.blue + self.green}")
        return self


class StageArgs(Schema):
    url: PackageUrl
    sha256: Sha256
    version: Name  # the label the package's signed manifest must carry
    size_bytes: Count | None = None
    package_version: Count | None = None  # the manifest's integer version, when checked


class ShadowArgs(Schema):
    sample_rate: Annotated[float, Field(ge=0.0, le=1.0)]


class SetWeightsArgs(Weights):
    pass


class NoArgs(Schema):
    pass


class CaptureRuleArgs(Schema):
    """The capture rules of a ``capture`` command (the device's ``capture.rules`` fields)."""

    sample_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.001
    low_confidence: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    disagreement: bool = True
    drift_above: Annotated[float, Field(ge=0.0)] | None = None
    errors: bool = True
    requests: bool = True
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None


class CaptureArgs(Schema):
    """``enabled`` false stops capturing (what is stored stays, and is still sent);
    ``budget_bytes`` and ``max_per_hour``, when given, replace the device's configured
    ones, never above its ``maxBudgetBytes`` and ``maxPerHourLimit`` (a command over
    them is refused). A device whose configuration does not enable capture refuses
    every ``capture`` command."""

    enabled: bool
    rules: CaptureRuleArgs = Field(default_factory=CaptureRuleArgs)
    budget_bytes: Count | None = None
    max_per_hour: Count | None = None


class Command(Schema):
    """Fields every command carries; build one of the per-action subclasses."""

    v: Literal[1] = 1
    type: Literal["command"] = "command"
    id: MessageId = Field(default_factory=new_message_id)
    command_id: Name = Field(default_factory=new_message_id)
    target: Target
    rollout_id: Name
    rollout_seq: Seq
    action: CommandAction
    args: Schema
    issued_at: UnixMillis
    key_id: Name | None = None
    signature: SignatureText | None = None

    @model_validator(mode="after")
    def _class_matches_action(self) -> Self:
        if COMMAND_CLASSES.get(self.action) is not type(self):
            raise ValueError(f"a {self.action!r} command must be built as its own class")
        return self

    def unsigned(self) -> dict[str, Any]:
        """The JSON-ready fields a signature covers: all of them but ``signature``."""
        return self.model_dump(mode="json", exclude={"signature"})


class StageCommand(Command):
    action: Literal["stage"] = "stage"
    args: StageArgs


class ShadowCommand(Command):
    action: Literal["shadow"] = "shadow"
    args: ShadowArgs


class SetWeightsCommand(Command):
    action: Literal["set_weights"] = "set_weights"
    args: SetWeightsArgs


class PromoteCommand(Command):
    action: Literal["promote"] = "promote"
    args: NoArgs = Field(default_factory=NoArgs)


class ConfirmCommand(Command):
    action: Literal["confirm"] = "confirm"
    args: NoArgs = Field(default_factory=NoArgs)


class RollbackCommand(Command):
    action: Literal["rollback"] = "rollback"
    args: NoArgs = Field(default_factory=NoArgs)


class StatusCommand(Command):
    action: Literal["status"] = "status"
    args: NoArgs = Field(default_factory=NoArgs)


class AnnounceCommand(Command):
    action: Literal["announce"] = "announce"
    args: NoArgs = Field(default_factory=NoArgs)


class CaptureCommand(Command):
    action: Literal["capture"] = "capture"
    args: CaptureArgs


COMMAND_CLASSES: Mapping[str, type[Command]] = MappingProxyType({
    "stage": StageCommand,
    "shadow": ShadowCommand,
    "set_weights": SetWeightsCommand,
    "promote": PromoteCommand,
    "confirm": ConfirmCommand,
    "rollback": RollbackCommand,
    "status": StatusCommand,
    "announce": AnnounceCommand,
    "capture": CaptureCommand,
})
