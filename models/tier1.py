"""Tier-1 answers: sentiment, intent, entities, FAQ and rules, from heads on the shared embedding.

When the router already ran the encoder (a chat request), its embedding and entities are passed in and
no second pass is made; direct task requests (``/v1/tasks/*``) are encoded here, one pass per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.encoder import Encoder
from models.entities import Entity, EntityTagger
from models.faq import FaqIndex
from models.heads import LinearHead
from models.rules import RuleEngine

TIER1_TASKS = ("sentiment", "intent", "entities", "faq", "rule")


@dataclass
class Tier1Request:
    """One tier-1 job. ``embedding``/``entities`` come from the router when it has already encoded."""

    task: str
    text: str
    embedding: np.ndarray | None = None
    entities: list[Entity] | None = None

    @property
    def needs_encoding(self) -> bool:
        """Whether answering takes an encoder pass (the router's features are missing)."""
        if self.task == "rule":
            return False
        return self.embedding is None or (self.task == "entities" and self.entities is None)


@dataclass
class Tier1Answer:
    """A tier-1 result: a short reply, the structured result, and whether to escalate instead."""

    task: str
    reply: str
    result: dict
    confidence: float
    escalate: bool = False
    reason: str = ""
    input_tokens: int = 0
    extra: dict = field(default_factory=dict)


class Tier1Models:
    """The tier-1 heads and look-ups behind one batch function."""

    def __init__(self, encoder: Encoder, sentiment: LinearHead, intent: LinearHead, tagger: EntityTagger,
                 faq: FaqIndex, rules: RuleEngine, min_confidence: dict[str, float], faq_min_score: float):
        self.encoder, self.sentiment, self.intent, self.tagger = encoder, sentiment, intent, tagger
        self.faq, self.rules = faq, rules
        self.min_confidence, self.faq_min_score = min_confidence, faq_min_score

    @classmethod
    def from_settings(cls, settings, encoder: Encoder | None = None) -> "Tier1Models":
        """Build from a :class:`serve.settings.Settings`, sharing ``encoder`` when given."""
        encoder = encoder or Encoder(**settings.encoder.model_dump())
        heads = Path(settings.router.heads_dir)
        return cls(
            encoder,
            LinearHead.load(heads / "sentiment.npz"),
            LinearHead.load(heads / "intent.npz"),
            EntityTagger(LinearHead.load(heads / "entities.npz")),
            FaqIndex.from_file(settings.tier1.faq_path, encoder),
            RuleEngine(settings.tier1.rules),
            dict(settings.tier1.min_confidence),
            settings.tier1.faq_min_score,
        )

    def answer_batch(self, requests: list[Tier1Request]) -> list[Tier1Answer]:
        """Answer every request; those without router features share one encoder pass."""
        for r in requests:
            if r.task not in TIER1_TASKS:
                raise ValueError(f"tier 1 has no task {r.task!r}; it answers {', '.join(TIER1_TASKS)}")
        todo = [i for i, r in enumerate(requests) if r.needs_encoding]
        if todo:
            encoded = self.encoder.encode([requests[i].text for i in todo])
            for k, i in enumerate(todo):
                r = requests[i]
                r.embedding = encoded.pooled[k]
                if r.task == "entities":
                    r.entities = self.tagger.extract(r.text, encoded.tokens[k], encoded.offsets[k],
                                                     encoded.word_ids[k])
        answers = [self._answer(r) for r in requests]
        for r, a in zip(requests, answers):
            a.input_tokens = self.encoder.count_tokens(r.text)
        return answers

    def _answer(self, r: Tier1Request) -> Tier1Answer:
        if r.task == "rule":
            hit = self.rules.match(r.text)
            if hit is None:
                return Tier1Answer("rule", "", {}, 0.0, True, "no rule matches")
            return Tier1Answer("rule", hit.answer, {"rule": hit.name}, 1.0)
        if r.task == "faq":
            (match,) = self.faq.best(r.embedding[None, :])
            result = {"faq_id": match.entry.id, "question": match.entry.question, "answer": match.entry.answer,
                      "score": round(match.score, 4)}
            if match.score < self.faq_min_score:
                return Tier1Answer("faq", "No FAQ entry matches this question.", result, match.score, True,
                                   f"best FAQ match '{match.entry.id}' scored {match.score:.2f} < {self.faq_min_score}")
            return Tier1Answer("faq", match.entry.answer, result, match.score)
        if r.task == "entities":
            return self._entities(r.entities or [])
        head = self.sentiment if r.task == "sentiment" else self.intent
        p = head.predict_proba(r.embedding[None, :])[0]
        label, confidence = head.labels[int(p.argmax())], float(p.max())
        if r.task == "sentiment":
            result = {"label": label, "scores": {l: round(float(s), 4) for l, s in zip(head.labels, p)}}
            reply = f"Sentiment: {label}."
        else:
            top = np.argsort(p)[::-1][:3]
            label = "out_of_scope" if label == "oos" else label
            result = {"intent": label, "top": [{"intent": head.labels[i], "score": round(float(p[i]), 4)} for i in top]}
            reply = f"Intent: {label}."
            if label == "out_of_scope":
                return Tier1Answer("intent", reply, result, confidence, True, "intent is out of scope")
        threshold = self.min_confidence.get(r.task, 0.0)
        if confidence < threshold:
            return Tier1Answer(r.task, reply, result, confidence, True,
                               f"{r.task} confidence {confidence:.2f} < {threshold}")
        return Tier1Answer(r.task, reply, result, confidence)

    def _entities(self, entities: list[Entity]) -> Tier1Answer:
        result = {"entities": [e.as_dict() for e in entities]}
        if not entities:
            return Tier1Answer("entities", "No entities found.", result, 0.0, True, "no entities found")
        confidence = float(min(e.confidence for e in entities))
        reply = "Entities: " + ", ".join(f"{e.text} ({e.type})" for e in entities) + "."
        threshold = self.min_confidence.get("entities", 0.0)
        if confidence < threshold:
            return Tier1Answer("entities", reply, result, confidence, True,
                               f"entity confidence {confidence:.2f} < {threshold}")
        return Tier1Answer("entities", reply, result, confidence)
