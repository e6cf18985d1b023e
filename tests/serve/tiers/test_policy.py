"""Routing policy: forced models, stickiness, escalation over missing tiers."""

from __future__ import annotations

from dataclasses import dataclass

from serve.tiers.policy import TierChoice, choose_tier, escalate, rank_tier2, resolve_available


def test_router_proposal_passes_through():
    assert choose_tier(2, 0.8, "classifier") == TierChoice(2, "classifier")


def test_forced_model_wins():
    choice = choose_tier(3, 0.99, "classifier", forced_tier=1, previous_tier=3)
    assert choice.tier == 1 and "client" in choice.reason


def test_sticky_conversation_stays_up_unless_router_is_sure():
    assert choose_tier(1, 0.6, "classifier", previous_tier=3).tier == 3
    assert "sticky" in choose_tier(1, 0.6, "classifier", previous_tier=3).reason
    assert choose_tier(1, 0.95, "classifier", previous_tier=3).tier == 1
    assert choose_tier(3, 0.5, "classifier", previous_tier=1).tier == 3


def test_missing_tier_two_goes_to_three_and_says_so():
    choice = resolve_available(TierChoice(2, "classifier: generation"), {1, 3})
    assert choice == TierChoice(3, "classifier: generation; tier 2 not deployed; escalated to tier 3", 2,
                                "tier2_not_deployed")
    assert resolve_available(TierChoice(1, "x"), {1, 3}) == TierChoice(1, "x")


def test_a_tier_configured_but_not_placed_says_why():
    absent = {2: "tier 2 not deployed: qwen cannot be placed (needs 1 GPU; the cluster has 0)"}
    choice = resolve_available(TierChoice(2, "classifier: generation"), {1, 3}, absent)
    assert choice.tier == 3 and "needs 1 GPU" in choice.reason


def test_escalation_only_goes_up():
    up = escalate(TierChoice(1, "faq"), {1, 3}, "low confidence", "tier1_unsure")
    assert up.tier == 3 and up.escalated_from == 1 and "low confidence" in up.reason and up.cause == "tier1_unsure"
    assert escalate(TierChoice(3, "x"), {1, 2, 3}, "why", "tier3_x") is None


@dataclass(frozen=True)
class Target:
    served_id: str
    tasks: tuple = ()


def test_tier2_pick_prefers_task_fit_then_load():
    general, sql, extract = Target("base"), Target("base:sql", ("code",)), Target("base:extract", ("classify",))
    loads = {"base": 0.0, "base:sql": 0.9, "base:extract": 0.5}
    ranked, reason = rank_tier2([general, sql, extract], "code", lambda t: loads[t.served_id])
    assert ranked == [sql, general]  # extract does not fit 'code'
    assert "base:sql" in reason and "lists task 'code'" in reason and "load 0.90" in reason
    ranked, reason = rank_tier2([general, sql, extract], "generation", lambda t: loads[t.served_id])
    assert ranked == [general] and "general model" in reason


def test_tier2_pick_balances_load_among_fitting_models():
    a, b = Target("a", ("generation",)), Target("b", ("generation",))
    ranked, _ = rank_tier2([a, b], "generation", lambda t: {"a": 0.8, "b": 0.1}[t.served_id])
    assert ranked == [b, a]
    # Equal load (within a 10% step): the conversation's previous model keeps its warm prefix cache.
    ranked, _ = rank_tier2([a, b], "generation", lambda t: 0.0, previous="b")
    assert ranked == [b, a]
    ranked, _ = rank_tier2([a, b], "generation", lambda t: 0.0)
    assert ranked == [a, b]


def test_no_tier2_model_for_a_task():
    ranked, reason = rank_tier2([Target("a", ("code",))], "generation", lambda t: 0.0)
    assert ranked == [] and "no tier-2 model is configured for task 'generation'" in reason


def test_tier2_pick_drops_models_predicted_below_the_quality_threshold():
    small, large = Target("small"), Target("large")
    quality = {"small": 0.4, "large": 0.8}
    ranked, reason = rank_tier2([small, large], "generation", lambda t: 0.0, quality=lambda t: quality[t.served_id],
                                threshold=0.6)
    assert ranked == [large] and "predicted quality 0.80" in reason
    ranked, reason = rank_tier2([small, large], "generation", lambda t: 0.0, quality=lambda t: quality[t.served_id],
                                threshold=0.9)
    assert ranked == [] and "large: 0.80 < threshold 0.90" in reason


def test_tier2_pick_without_a_prediction_keeps_every_fitting_model():
    a = Target("a")
    ranked, reason = rank_tier2([a], "generation", lambda t: 0.0, quality=lambda t: None, threshold=0.99)
    assert ranked == [a] and "predicted" not in reason
