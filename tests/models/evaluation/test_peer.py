"""The semantic-router peer: a clear error where its venv is not built, and a tiny end-to-end run where it is."""

from __future__ import annotations

import pytest

from models.evaluation.peer import PEER_VENV, PeerUnavailable, semantic_router_figures

TIER1 = ["Is this review positive or negative? 'The food was cold.'", "Classify the topic: 'Stocks fell 3% today.'",
         "Which intent is this: 'I lost my card'?", "Sentiment of 'great phone, love it'?",
         "List the people named in: 'Ada met Alan in London.'",
         "Label this tweet as offensive or not: 'have a nice day'",
         "Positive or negative: 'worst film ever'", "What is the category of 'How do I reset my password?'",
         "Find the organisations in: 'Apple sued Samsung.'", "Is 'I love this' positive?"]
TIER2 = ["Write a short poem about autumn.", "Draft an email asking my landlord to fix the heating.",
         "Translate 'good morning, how are you' into German.", "Summarise the plot of Hamlet in three sentences.",
         "Write a product description for a steel water bottle.", "Compose a birthday message for my aunt.",
         "Rewrite this paragraph in a friendlier tone: 'Submit the form now.'", "Give me five names for a bakery.",
         "Write a limerick about a cat.", "Suggest a title for a blog post about hiking."]
TIER3 = ["A train leaves at 3pm at 80 km/h; another at 4pm at 100 km/h. When does the second catch up?",
         "Prove that the square root of 2 is irrational.", "If 3x + 7 = 25, what is x? Show your steps.",
         "How many ways can 5 people sit around a round table?", "Solve: a farmer has 17 sheep, all but 9 die.",
         "What is the sum of the first 100 odd numbers? Explain.", "Find the derivative of x^3 * sin(x).",
         "A bat and a ball cost $1.10; the bat costs $1 more. What does the ball cost?",
         "Is 221 prime? Reason step by step.", "Write a function that returns the nth Fibonacci number in O(log n)."]


def test_a_missing_peer_venv_says_to_run_make_peer(tmp_path):
    with pytest.raises(PeerUnavailable, match="make peer"):
        semantic_router_figures([("hi", 1)], [("hello", 1)], tmp_path, venv=tmp_path / "no-venv")


@pytest.mark.slow
@pytest.mark.skipif(not (PEER_VENV / ".installed").exists(), reason="the peer venv is not built: run `make peer`")
def test_the_peer_routes_a_tiny_split():
    from models.training.base_model import packaged_model_dir

    rows = [(text, tier) for tier, texts in ((1, TIER1), (2, TIER2), (3, TIER3)) for text in texts]
    test = [(text, tier) for text, tier in rows[::3]][:10]
    train = [row for row in rows if row not in test]
    figures = semantic_router_figures(train, test, packaged_model_dir(), timeout_s=600)
    assert figures["version"] == "1.1.1" and figures["test_rows"] == 10 and figures["train_rows"] == len(train)
    assert len(figures["predicted_tiers"]) == 10 and set(figures["predicted_tiers"]) <= {1, 2, 3, None}
    for key in ("tier_accuracy", "tier_accuracy_none_as_tier2", "tier_accuracy_top_route", "unrouted_rate"):
        assert 0 <= figures[key] <= 1
    assert 0 < figures["p50_ms"] <= figures["p90_ms"]
    assert figures["config"]["router"] == "IndexedRouter" and figures["config"]["torch_threads"] == 1
