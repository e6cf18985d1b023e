"""Routing policy: forced models, stickiness, escalation over missing tiers."""

from __future__ import annotations

from serve.policy import TierChoice, choose_tier, escalate, resolve_available


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
    assert choice == TierChoice(3, "classifier: generation; tier 2 not deployed; escalated to tier 3", 2)
    assert resolve_available(TierChoice(1, "x"), {1, 3}) == TierChoice(1, "x")


def test_escalation_only_goes_up():
    up = escalate(TierChoice(1, "faq"), {1, 3}, "low confidence")
    assert up.tier == 3 and up.escalated_from == 1 and "low confidence" in up.reason
    assert escalate(TierChoice(3, "x"), {1, 2, 3}, "why") is None
