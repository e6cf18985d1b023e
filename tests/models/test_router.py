"""The router in-process: the acceptance examples, context, rules, FAQ and PII."""

from __future__ import annotations

import pytest

from models.router import TASK_TIER, RouteInput

ACCEPTANCE = [
    ("Product is great!", "sentiment", 1),
    ("Meet John at Paris cafe on Monday.", "entities", 1),
    ("What is our return policy?", "faq", 1),
    ("Write a professional follow-up.", "generation", 2),
    ("Compare these two business strategies.", "reasoning", 3),
]


@pytest.mark.parametrize("text,task,tier", ACCEPTANCE)
def test_acceptance_examples(router, text, task, tier):
    (decision,) = router.route_batch([RouteInput(text)])
    assert (decision.task, decision.tier) == (task, tier), decision.reason
    assert 0 < decision.confidence <= 1
    assert decision.reason


def test_batch_matches_single_calls(router):
    texts = [t for t, _, _ in ACCEPTANCE]
    batched = router.route_batch([RouteInput(t) for t in texts])
    single = [router.route_batch([RouteInput(t)])[0] for t in texts]
    assert [d.task for d in batched] == [d.task for d in single]
    for b, s in zip(batched, single):
        assert b.confidence == pytest.approx(s.confidence, abs=1e-6)


def test_scores_cover_every_task_and_sum_to_one(router):
    (decision,) = router.route_batch([RouteInput("Write a haiku about the sea.")])
    assert set(decision.scores) == set(TASK_TIER)
    assert sum(decision.scores.values()) == pytest.approx(1.0, abs=1e-4)
    assert decision.embedding.shape == (384,)


def test_faq_needs_a_matching_entry(router):
    (decision,) = router.route_batch([RouteInput("How do I reset the password of my router's admin page?")])
    assert decision.task != "faq" or decision.tier > 1


def test_rule_wins(router):
    (decision,) = router.route_batch([RouteInput("hello!")])
    assert (decision.task, decision.tier, decision.rule) == ("rule", 1, "greeting")


def test_context_changes_the_scores(router):
    follow_up = "And the second one?"
    alone, with_context = router.route_batch([
        RouteInput(follow_up),
        RouteInput(follow_up, "Compare these two business strategies in depth, with the risks of each."),
    ])
    assert with_context.scores["reasoning"] > alone.scores["reasoning"]


def test_pii_flag(router):
    with_pii, without = router.route_batch([
        RouteInput("Please e-mail jane.doe@example.com the contract."),
        RouteInput("The weather is nice."),
    ])
    assert with_pii.pii and not without.pii
