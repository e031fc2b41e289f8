"""The publishing policy: which inferences become published results, and the counts of
those that did not, by rule.

A 30 fps camera must not flood MQTT; as Frigate publishes a change feed rather than
every frame, the policy lets a result through only when every rule that is set agrees:

- ``everyN``: only every Nth inference of the loop (counted by the hand-off itself, on
  the inference thread: the others are never copied);
- ``maxPerSecond``: at most R results a second, at least 1/R s apart (while the cap is
  closed the hand-off takes nothing, so those inferences are not looked at either);
- ``minScore``: only when the best class scores at least this;
- ``onChange``: only when the best class differs from the last *published* result's
  (so a change held back by the cap is published as soon as the cap opens, if it lasts).

The rules are checked in that order and a result held back is counted under the first
rule that stopped it. :class:`PublishPolicy` decides on the publisher's thread;
:class:`PolicyCounts` holds its counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.device.results.config import PolicyConfig
from agent.wire.results import SUPPRESS_REASONS, SuppressReason


@dataclass
class PolicyCounts:
    """Results published, and held back by each rule (``every_n`` and the part of
    ``rate`` the hand-off counts are added by the stream)."""

    published: int = 0
    suppressed: dict[SuppressReason, int] = field(
        default_factory=lambda: dict.fromkeys(SUPPRESS_REASONS, 0))


class PublishPolicy:
    """The rules after ``everyN``, for results the hand-off delivered (one thread)."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.interval_s = 1.0 / config.max_per_second if config.max_per_second else 0.0
        self.counts = PolicyCounts()
        self.next_at = 0.0  # monotonic time from which the rate cap lets one through
        self._last_top1: int | None = None

    @property
    def rate_limited(self) -> bool:
        return self.interval_s > 0

    def decide(self, top1: int | None, score: float | None, now: float) -> SuppressReason | None:
        """None when the result is to be published (and then counted as published, and
        the cap closed until the next one may go), else the rule that holds it back
        (counted). ``top1``/``score`` are the best class and its score, None when the
        model has no scores to rank: the score and change rules then let it through."""
        reason = self._reason(top1, score, now)
        if reason is not None:
            self.counts.suppressed[reason] += 1
            return reason
        self.counts.published += 1
        self._last_top1 = top1
        self.next_at = now + self.interval_s
        return None

    def _reason(self, top1: int | None, score: float | None,
                now: float) -> SuppressReason | None:
        config = self.config
        if self.interval_s and now < self.next_at:
            return "rate"
        if config.min_score is not None and score is not None and score < config.min_score:
            return "below_score"
        if config.on_change and top1 is not None and top1 == self._last_top1:
            return "unchanged"
        return None
