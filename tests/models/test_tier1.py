"""Tier-1 answers from the trained heads: each head on committed held-out fixture rows, the request as read
(labels named by the request, entity types asked), thresholds applied, FAQ, intents and rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.training import datasets as ds
from models.request import ParsedRequest
from models.router import RouteInput
from models.tier1 import Tier1Models, Tier1Request

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "heads_fixture.json"


@pytest.fixture(scope="module")
def rows() -> dict:
    return json.loads(FIXTURE.read_text())


def _ask(tier1, task: str, text: str, **parsed):
    (answer,) = tier1.answer_batch([Tier1Request(task, text, ParsedRequest(task, text, **parsed))])
    return answer


def test_sentiment_heads_on_fixture_rows(tier1, rows):
    two = [_ask(tier1, "sentiment", t, labels=["positive", "negative"]).result["canonical"] == l
           for t, l in rows["sentiment2"]]
    three = [_ask(tier1, "sentiment", t).result["canonical"] == l for t, l in rows["sentiment3"]]
    assert np.mean(two) >= 0.85 and np.mean(three) >= 0.6, (np.mean(two), np.mean(three))


def test_sentiment_answers_in_the_labels_the_request_names(tier1):
    answer = _ask(tier1, "sentiment", "Absolutely loved it, best purchase this year.", labels=["Good", "Bad"])
    assert answer.result["label"] == "Good" and answer.result["canonical"] == "positive"
    assert set(answer.result["scores"]) == {"Good", "Bad"}


def test_intent_heads_on_fixture_rows(tier1, rows):
    clinc = [_ask(tier1, "intent", t).result["intent"] in (l, "out_of_scope" if l == "oos" else l)
             for t, l in rows["clinc150"]]
    head = tier1.heads["banking77"]
    banking = [head.labels[int(head.logits(tier1.encoder.encode([t]).cls).argmax())] == l for t, l in rows["banking77"]]
    assert np.mean(clinc) >= 0.8 and np.mean(banking) >= 0.8, (np.mean(clinc), np.mean(banking))


def test_entity_tagger_on_fixture_sentences(tier1, rows):
    found, gold = 0, 0
    for tokens, tags in rows["ner_conll"]:
        text = ds.detokenize(tokens)
        answer = _ask(tier1, "entities", text)
        got = {(e["text"], e["type"]) for e in answer.result["entities"] if e["type"] in ("PER", "ORG", "LOC", "MISC")}
        want = {(text[a:b], kind) for (a, b), kind in _gold(tokens, tags)}
        found += len(got & want)
        gold += len(want)
    assert found / gold >= 0.8


def _gold(tokens, tags):
    _, offsets = ds.detokenize_with_offsets(tokens)
    spans = []
    for tag, (a, b) in zip(tags, offsets):
        if tag.startswith("B-"):
            spans.append([(a, b), tag[2:]])
        elif tag.startswith("I-") and spans:
            spans[-1][0] = (spans[-1][0][0], b)
    return [(tuple(s), k) for s, k in spans]


def test_entities_of_the_asked_types_only(tier1):
    answer = _ask(tier1, "entities", "Nvidia and Samsung announced a partnership in Seoul.", entity_types=["ORG"])
    assert {e["text"] for e in answer.result["entities"]} == {"Nvidia", "Samsung"}
    assert answer.result["types"] == ["ORG"]


def test_pattern_types_come_from_the_payload(tier1):
    answer = _ask(tier1, "entities", "Write to ana@example.com before 5 May 2026.", entity_types=["EMAIL", "DATE"])
    assert {(e["text"], e["type"]) for e in answer.result["entities"]} == {("ana@example.com", "EMAIL"),
                                                                          ("5 May 2026", "DATE")}


def test_a_wrapped_request_is_answered_from_the_router_pass(router, tier1, monkeypatch):
    (decision,) = router.route_batch([RouteInput(
        "Classify as positive, negative or neutral: 'The meeting is at 10am in room 4.'")])
    assert decision.tier == 1 and decision.features is not None

    def no_second_pass(texts):
        raise AssertionError("tier 1 re-encoded a request the router had already encoded")

    monkeypatch.setattr(tier1.encoder, "encode", no_second_pass)
    (answer,) = tier1.answer_batch([Tier1Request(decision.task, decision.parsed.payload, decision.parsed,
                                                 decision.features)])
    assert answer.result["label"] == "neutral"


def test_thresholds_are_applied(settings, router):
    strict = Tier1Models.from_settings(settings, router.encoder, router.faq)
    strict.overrides = {"sentiment3": 1.01}
    assert _ask(strict, "sentiment", "I love it.").escalate
    lax = Tier1Models.from_settings(settings, router.encoder, router.faq)
    lax.overrides = {"sentiment3": 0.0}
    answer = _ask(lax, "sentiment", "I love it.")
    assert not answer.escalate and answer.result["canonical"] == "positive"


def test_faq_match_and_abstention(tier1):
    hit = _ask(tier1, "faq", "What is your return policy?")
    miss = _ask(tier1, "faq", "What is the boiling point of tungsten?")
    assert hit.result["faq_id"] == "returns" and not hit.escalate and "30 days" in hit.result["answer"]
    assert miss.escalate


def test_rule_and_intent_response(tier1):
    (rule,) = tier1.answer_batch([Tier1Request("rule", "thanks!")])
    assert rule.result == {"rule": "thanks", "answer": "You're welcome!"} and rule.confidence == 1.0
    (canned,) = tier1.answer_batch([Tier1Request("intent_response", "are you a robot?", intent="are_you_a_bot",
                                                 response="Yes.")])
    assert canned.result == {"intent": "are_you_a_bot", "response": "Yes."} and not canned.escalate


def test_unknown_task_is_rejected(tier1):
    with pytest.raises(ValueError, match="no task 'poetry'"):
        tier1.answer_batch([Tier1Request("poetry", "roses are red")])
