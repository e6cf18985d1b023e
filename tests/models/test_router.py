"""The router in-process: what is asked, where it goes, why; the request as read; context, rules, PII."""

from __future__ import annotations

import pytest

from models.router import TASK_TIER, RouteInput

ASKED = [
    ("Extract the company names: Nvidia and Samsung announced a partnership in Seoul.", "entities"),
    ("Classify as positive, negative or neutral: 'The meeting is at 10am in room 4.'", "sentiment"),
    ("Which category does this ticket belong to: billing, technical or shipping? 'I was charged twice for "
     "my order last month.'", "classify"),
    ("What is the sentiment of this review? \"The battery died after two days.\"", "sentiment"),
]
NOT_TIER1 = [
    "What is the weather usually like in Lisbon in October?",
    "How many calories are in a banana?",
    "Translate 'where is the train station' into German.",
    "Write a professional follow-up.",
    "Compare these two business strategies.",
    "Summarize this review in one sentence: 'The hotel was clean but the staff were rude and slow.'",
]


@pytest.mark.parametrize("text,task", ASKED)
def test_asked_tier1_tasks_reach_tier1_read_right(router, text, task):
    (decision,) = router.route_batch([RouteInput(text)])
    assert (decision.task, decision.tier) == (task, 1), decision.reason
    assert decision.parsed.payload and decision.parsed.payload in text
    assert decision.features is not None and decision.features.payload_pieces


def test_the_label_set_and_entity_types_the_request_names(router):
    ticket, companies = router.route_batch([RouteInput(ASKED[2][0]), RouteInput(ASKED[0][0])])
    assert ticket.parsed.labels == ["billing", "technical", "shipping"]
    assert ticket.parsed.payload == "I was charged twice for my order last month."
    assert companies.parsed.entity_types == ["ORG"]
    assert companies.parsed.payload.startswith("Nvidia")


def test_instruction_in_the_system_prompt(router):
    (decision,) = router.route_batch([RouteInput(
        "The delivery was late and the box was damaged.",
        system="You are a sentiment classifier. Reply with positive, negative or neutral.")])
    assert (decision.task, decision.tier) == ("sentiment", 1), decision.reason
    assert decision.parsed.payload == "The delivery was late and the box was damaged."
    assert sorted(l.lower() for l in decision.parsed.labels) == ["negative", "neutral", "positive"]


@pytest.mark.parametrize("text", NOT_TIER1)
def test_questions_and_generation_do_not_stay_on_tier1(router, text):
    (decision,) = router.route_batch([RouteInput(text)])
    assert decision.tier > 1, decision.reason


def test_an_intent_label_is_not_an_answer(router):
    (decision,) = router.route_batch([RouteInput("What's the weather in Lisbon?")])
    assert decision.tier > 1 and decision.intent_response is None


def test_a_configured_intent_is_answered(router):
    (decision,) = router.route_batch([RouteInput("are you a bot?")])
    assert (decision.tier, decision.intent) == (1, "are_you_a_bot"), decision.reason
    assert decision.intent_response


def test_scores_cover_every_task_and_sum_to_one(router):
    (decision,) = router.route_batch([RouteInput("Write a haiku about the sea.")])
    assert set(decision.scores) == set(TASK_TIER)
    assert sum(decision.scores.values()) == pytest.approx(1.0, abs=1e-4)
    assert decision.embedding.shape == (384,)


def test_batch_matches_single_calls(router):
    texts = [t for t, _ in ASKED] + NOT_TIER1
    batched = router.route_batch([RouteInput(t) for t in texts])
    single = [router.route_batch([RouteInput(t)])[0] for t in texts]
    assert [(d.task, d.tier) for d in batched] == [(d.task, d.tier) for d in single]


def test_faq_match_and_miss(router):
    hit, miss = router.route_batch([RouteInput("What is your return policy?"),
                                    RouteInput("How do I reset the password of my router's admin page?")])
    assert (hit.task, hit.tier, hit.faq_id) == ("faq", 1, "returns")
    assert miss.tier > 1
    # A FAQ match's confidence is a calibrated probability (Platt on its cosine), not the cosine itself.
    faq = router.calibration.scores["faq"]
    assert hit.confidence == pytest.approx(faq.prob(hit.faq_score)) and hit.confidence != hit.faq_score
    assert faq.prob(0.5) < faq.prob(0.75) < faq.prob(0.95)


def test_rule_wins(router):
    (decision,) = router.route_batch([RouteInput("hello!")])
    assert (decision.task, decision.tier, decision.rule) == ("rule", 1, "greeting")


def test_context_changes_the_scores(router):
    follow_up = "And the second one?"
    alone, with_context = router.route_batch([
        RouteInput(follow_up),
        RouteInput(follow_up, "Compare these two business strategies in depth, with the risks of each."),
    ])
    assert with_context.scores != alone.scores


def test_pii_flag(router):
    with_pii, without = router.route_batch([
        RouteInput("Please e-mail jane.doe@example.com the contract."),
        RouteInput("The weather is nice."),
    ])
    assert with_pii.pii and not without.pii


HARD = "Prove that there are infinitely many primes p such that p + 2 is also prime, or explain why this is open."


def _with_threshold(router, threshold: float):
    from dataclasses import replace

    from models.router import Router

    return Router(router.encoder, router.reader, router.heads, router.faq, router.rules, router.calibration,
                  replace(router.thresholds, quality_threshold=threshold), router.intent_responses,
                  router.overrides, router.quality)


def test_generative_requests_go_to_tier2_only_when_predicted_quality_clears_the_threshold(router):
    (decision,) = router.route_batch([RouteInput(HARD)])
    (p,) = decision.quality.values()
    assert 0.0 < p < 1.0 and "predicted quality on tier 2" in decision.reason
    (low,) = _with_threshold(router, p - 0.01).route_batch([RouteInput(HARD)])
    (high,) = _with_threshold(router, p + 0.01).route_batch([RouteInput(HARD)])
    assert (low.tier, high.tier) == (2, 3)
    # The confidence is the probability behind the tier: that tier 2 suffices, or that it does not.
    assert low.confidence == pytest.approx(p) and high.confidence == pytest.approx(1 - p)


def test_tier1_requests_keep_their_tier_whatever_the_quality_threshold(router):
    (decision,) = _with_threshold(router, 1.0).route_batch([RouteInput(ASKED[0][0])])
    assert decision.tier == 1


def test_a_follow_up_reads_the_question_it_follows(router):
    (alone,) = router.route_batch([RouteInput("Make it shorter.")])
    (threaded,) = router.route_batch([RouteInput("Make it shorter.", context=HARD)])
    assert threaded.quality != alone.quality
    (hard,) = router.route_batch([RouteInput(HARD)])
    p = lambda d: next(iter(d.quality.values()))  # noqa: E731
    assert min(p(alone), p(hard)) <= p(threaded) <= max(p(alone), p(hard))


def test_a_decision_leaving_the_process_carries_its_entities(router):
    import pickle

    (decision,) = router.route_batch([RouteInput("Email john.smith@example.com about the invoice.")])
    copy = pickle.loads(pickle.dumps(decision))
    assert copy.tag_entities is None and copy.pii and copy.entities == decision.entities
