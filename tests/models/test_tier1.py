"""Tier-1 batch function: each task, escalation, and reuse of the router's features."""

from __future__ import annotations

from models.router import RouteInput
from models.tier1 import Tier1Request


def test_sentiment(tier1):
    pos, neg = tier1.answer_batch([Tier1Request("sentiment", "Product is great!"),
                                   Tier1Request("sentiment", "This was a terrible, broken purchase.")])
    assert pos.result["label"] == "positive" and not pos.escalate
    assert neg.result["label"] == "negative"
    assert pos.reply == "Sentiment: positive."


def test_entities(tier1):
    (ans,) = tier1.answer_batch([Tier1Request("entities", "Meet John at Paris cafe on Monday.")])
    found = {(e["text"], e["type"]) for e in ans.result["entities"]}
    assert {("John", "PER"), ("Paris", "LOC"), ("Monday", "DATE")} <= found
    assert ans.reply.startswith("Entities: ")


def test_no_entities_escalates(tier1):
    (ans,) = tier1.answer_batch([Tier1Request("entities", "it was fine i guess")])
    assert ans.escalate and "no entities" in ans.reason


def test_faq_match_and_abstention(tier1):
    hit, miss = tier1.answer_batch([Tier1Request("faq", "What is our return policy?"),
                                    Tier1Request("faq", "What is the boiling point of tungsten?")])
    assert hit.result["faq_id"] == "returns" and not hit.escalate
    assert "30 days" in hit.reply
    assert miss.escalate and miss.reply == "No FAQ entry matches this question."


def test_intent_and_out_of_scope(tier1):
    known, oos = tier1.answer_batch([Tier1Request("intent", "please book me a flight to boston tomorrow"),
                                     Tier1Request("intent", "how much has the dow changed today")])
    assert known.result["intent"] == "book_flight" and not known.escalate
    assert oos.result["intent"] == "out_of_scope" and oos.escalate


def test_rule(tier1):
    (ans,) = tier1.answer_batch([Tier1Request("rule", "thanks!")])
    assert ans.reply == "You're welcome!" and ans.confidence == 1.0


def test_router_features_are_reused(router, tier1, monkeypatch):
    (decision,) = router.route_batch([RouteInput("Meet John at Paris cafe on Monday.")])

    def no_second_pass(texts):
        raise AssertionError("tier 1 re-encoded a request the router had already encoded")

    monkeypatch.setattr(tier1.encoder, "encode", no_second_pass)
    (ans,) = tier1.answer_batch([Tier1Request("entities", "Meet John at Paris cafe on Monday.",
                                              decision.embedding, decision.entities)])
    assert any(e["text"] == "John" for e in ans.result["entities"])


def test_unknown_task_is_rejected(tier1):
    import pytest

    with pytest.raises(ValueError, match="no task 'poetry'"):
        tier1.answer_batch([Tier1Request("poetry", "roses are red")])
