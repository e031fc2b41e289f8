"""The publishing policy: each rule on its own, the rules together, and the counts."""

from __future__ import annotations

import pytest

from agent.device.results.config import PolicyConfig
from agent.device.results.policy import PublishPolicy


def policy(**rules: object) -> PublishPolicy:
    return PublishPolicy(PolicyConfig.model_validate({"maxPerSecond": None, **rules}))


def test_no_rule_publishes_everything() -> None:
    p = policy()
    assert [p.decide(i % 3, 0.5, now=float(i)) for i in range(6)] == [None] * 6
    assert p.counts.published == 6
    assert sum(p.counts.suppressed.values()) == 0


def test_the_rate_cap_keeps_results_at_least_one_interval_apart() -> None:
    p = policy(maxPerSecond=4)  # one per 0.25 s
    times = [0.0, 0.1, 0.2, 0.25, 0.3, 0.49, 0.5, 1.0]
    decisions = [p.decide(1, 0.9, now=10.0 + t) for t in times]
    assert decisions == [None, "rate", "rate", None, "rate", "rate", None, None]
    assert p.counts.published == 4 and p.counts.suppressed["rate"] == 4
    assert p.rate_limited and p.next_at == pytest.approx(11.25)


def test_min_score_holds_back_low_scores_only() -> None:
    p = policy(minScore=0.6)
    assert [p.decide(0, s, now=0.0) for s in (0.59, 0.6, 0.95, 0.1)] == \
        ["below_score", None, None, "below_score"]
    assert p.counts.suppressed["below_score"] == 2 and p.counts.published == 2


def test_on_change_compares_with_the_last_published_class() -> None:
    p = policy(onChange=True)
    classes = [2, 2, 2, 0, 0, 2, 1, 1]
    assert [p.decide(c, 0.9, now=0.0) for c in classes] == \
        [None, "unchanged", "unchanged", None, "unchanged", None, None, "unchanged"]
    assert p.counts.published == 4 and p.counts.suppressed["unchanged"] == 4


def test_a_change_held_back_by_the_cap_is_published_when_it_opens() -> None:
    p = policy(onChange=True, maxPerSecond=1)
    assert p.decide(0, 0.9, now=0.0) is None  # red
    assert p.decide(1, 0.9, now=0.5) == "rate"  # green, too soon
    assert p.decide(1, 0.9, now=1.0) is None  # still green: published, the cap is open
    assert p.decide(1, 0.9, now=2.5) == "unchanged"


def test_rules_combine_and_count_under_the_first_that_stops_a_result() -> None:
    p = policy(onChange=True, minScore=0.5, maxPerSecond=2)
    # (class, score, time) -> expected
    cases = [((0, 0.9, 0.0), None), ((1, 0.9, 0.1), "rate"), ((1, 0.2, 0.6), "below_score"),
             ((0, 0.8, 0.7), "unchanged"), ((1, 0.7, 0.8), None), ((1, 0.99, 1.5), "unchanged"),
             ((2, 0.4, 1.6), "below_score"), ((2, 0.5, 1.7), None)]
    assert [p.decide(c, s, now=t) for (c, s, t), _ in cases] == [want for _, want in cases]
    assert p.counts.published == 3
    assert p.counts.suppressed == {"every_n": 0, "rate": 1, "unchanged": 2, "below_score": 2}


def test_a_model_with_no_scores_passes_the_score_and_change_rules() -> None:
    p = policy(onChange=True, minScore=0.9)
    assert [p.decide(None, None, now=0.0) for _ in range(3)] == [None, None, None]


@pytest.mark.parametrize(("rules", "field"), [
    ({"everyN": 0}, "everyN"), ({"maxPerSecond": 0}, "maxPerSecond"),
    ({"maxPerSecond": -1}, "maxPerSecond"), ({"onChange": "sometimes"}, "onChange"),
    ({"every": 2}, "every")])
def test_bad_rules_are_refused_by_name(rules: dict[str, object], field: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        PolicyConfig.model_validate(rules)
    assert caught.value.errors()[0]["loc"] == (field,)
