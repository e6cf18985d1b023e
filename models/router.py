"""The learned router: one encoder pass per request gives the task, the proposed tier, a confidence, the
reason, the scores behind it, a PII flag and the embedding that tier 1 reuses.

Plain Python, no Ray: ``deployments/router.py`` wraps :meth:`Router.route_batch` in ``@serve.batch`` and
``tierwise route`` calls it in-process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.encoder import Encoder
from models.entities import PII_TYPES, Entity, EntityTagger
from models.faq import FaqIndex
from models.heads import LinearHead
from models.rules import RuleEngine

ENTITY_FEATURES = ("named_entities", "pattern_entities", "capitalised_words")
LEARNED_TYPES = frozenset({"PER", "LOC", "ORG", "MISC"})
TASK_TIER = {"sentiment": 1, "entities": 1, "faq": 1, "intent": 1, "generation": 2, "reasoning": 3}


def task_features(pooled: np.ndarray, texts: list[str], entities: list[list[Entity]]) -> np.ndarray:
    """Task-head input: the embedding plus how entity-laden each text is.

    The embedding alone reads "Meet John at Paris cafe on Monday." as a calendar command; the entity
    tagger, which already ran on the same pass, says it is mostly names, places and dates.
    """
    extra = np.zeros((len(texts), len(ENTITY_FEATURES)), dtype=np.float32)
    for i, (text, ents) in enumerate(zip(texts, entities)):
        words = text.split()
        learned = sum(e.type in LEARNED_TYPES for e in ents)
        capitalised = sum(w[:1].isupper() for w in words[1:]) / max(len(words) - 1, 1)
        extra[i] = (min(learned, 5) / 5, min(len(ents) - learned, 3) / 3, capitalised)
    return np.hstack([pooled, extra])


@dataclass(frozen=True)
class RouteInput:
    """What the router sees: the newest user message and the earlier turns as one text ('' if none)."""

    text: str
    context: str = ""


@dataclass
class RouteDecision:
    """The router's proposal for one request; the gateway's policy has the last word on the tier."""

    task: str
    tier: int
    confidence: float
    reason: str
    scores: dict[str, float]
    faq_id: str | None = None
    faq_score: float = 0.0
    rule: str | None = None
    pii: bool = False
    entities: list[Entity] = field(default_factory=list)
    embedding: np.ndarray | None = None

    def explain(self) -> dict:
        """The JSON-ready scores and signals behind the decision."""
        return {
            "tasks": {k: round(v, 4) for k, v in self.scores.items()},
            "faq": {"id": self.faq_id, "score": round(self.faq_score, 4)},
            "rule": self.rule,
            "pii": self.pii,
        }


@dataclass(frozen=True)
class RouterThresholds:
    """Knobs of the decision, from ``router`` and ``tier1`` settings."""

    tier1_min_confidence: float = 0.5
    context_weight: float = 0.3
    faq_min_score: float = 0.75
    intent_min_confidence: float = 0.5


class Router:
    """Routes batches of requests with one encoder pass per batch."""

    def __init__(self, encoder: Encoder, task_head: LinearHead, intent_head: LinearHead, tagger: EntityTagger,
                 faq: FaqIndex, rules: RuleEngine, thresholds: RouterThresholds):
        self.encoder, self.task_head, self.intent_head, self.tagger = encoder, task_head, intent_head, tagger
        self.faq, self.rules, self.thresholds = faq, rules, thresholds

    @classmethod
    def from_settings(cls, settings) -> "Router":
        """Build from a :class:`serve.settings.Settings` (encoder, heads, FAQ and rules it names)."""
        encoder = Encoder(**settings.encoder.model_dump())
        heads = Path(settings.router.heads_dir)
        return cls(
            encoder,
            LinearHead.load(heads / "task.npz"),
            LinearHead.load(heads / "intent.npz"),
            EntityTagger(LinearHead.load(heads / "entities.npz")),
            FaqIndex.from_file(settings.tier1.faq_path, encoder),
            RuleEngine(settings.tier1.rules),
            RouterThresholds(settings.router.tier1_min_confidence, settings.router.context_weight,
                             settings.tier1.faq_min_score, settings.tier1.min_confidence["intent"]),
        )

    def route_batch(self, inputs: list[RouteInput]) -> list[RouteDecision]:
        """Decide for every input; the texts and any contexts go through the encoder as one batch."""
        texts = [i.text for i in inputs]
        context_rows = {n: len(texts) + k for k, n in enumerate(n for n, i in enumerate(inputs) if i.context)}
        all_texts = texts + [i.context for i in inputs if i.context]
        encoded = self.encoder.encode(all_texts)
        entities = [self.tagger.extract(t, encoded.tokens[n], encoded.offsets[n], encoded.word_ids[n])
                    for n, t in enumerate(all_texts)]
        probs = self.task_head.predict_proba(task_features(encoded.pooled, all_texts, entities))
        matches = self.faq.best(encoded.pooled[: len(texts)])
        decisions = []
        for n, item in enumerate(inputs):
            p = probs[n]
            if n in context_rows:
                w = self.thresholds.context_weight
                p = (1 - w) * p + w * probs[context_rows[n]]
            decision = self._decide(item.text, dict(zip(self.task_head.labels, map(float, p))), matches[n],
                                    encoded.pooled[n], entities[n])
            decision.entities = entities[n]
            decision.pii = any(e.type in PII_TYPES for e in entities[n])
            decision.embedding = encoded.pooled[n]
            decisions.append(decision)
        return decisions

    def _decide(self, text: str, scores: dict[str, float], match, embedding: np.ndarray,
                entities: list[Entity]) -> RouteDecision:
        faq = {"faq_id": match.entry.id, "faq_score": match.score}
        rule = self.rules.match(text)
        if rule:
            return RouteDecision("rule", 1, 1.0, f"rule '{rule.name}' matched", scores, rule=rule.name, **faq)
        if match.score >= self.thresholds.faq_min_score:
            return RouteDecision("faq", 1, match.score,
                                 f"FAQ entry '{match.entry.id}' matched (score {match.score:.2f})", scores, **faq)
        task = max(scores, key=scores.get)
        confidence = scores[task]
        tier = TASK_TIER[task]
        reason = f"classifier: {task} (p={confidence:.2f})"
        if task == "intent":
            task, tier, confidence, reason = self._check_intent(scores, embedding, entities)
        elif task == "faq":
            tier, reason = 2, (f"FAQ-style question with no matching entry (best '{match.entry.id}', "
                               f"score {match.score:.2f} < {self.thresholds.faq_min_score}); needs generation")
        elif tier == 1 and confidence < self.thresholds.tier1_min_confidence:
            tier, reason = 2, f"{reason} below the tier-1 threshold {self.thresholds.tier1_min_confidence}"
        return RouteDecision(task, tier, confidence, reason, scores, **faq)

    def _check_intent(self, scores: dict[str, float], embedding: np.ndarray,
                      entities: list[Entity]) -> tuple[str, int, float, str]:
        """An intent request must name one of the configured intents.

        Commands and entity-laden statements look alike ("Book a table at Nobu on Friday", "Meet John at
        Paris cafe on Monday"); what tells them apart is whether the intent set knows the request. When it
        does not, a message with entities is an extraction request, and anything else needs generation.
        """
        p = self.intent_head.predict_proba(embedding[None, :])[0]
        best, best_p = self.intent_head.labels[int(p.argmax())], float(p.max())
        if best != "oos" and best_p >= self.thresholds.intent_min_confidence:
            return "intent", 1, scores["intent"], f"classifier: intent (p={scores['intent']:.2f}), intent '{best}' (p={best_p:.2f})"
        unknown = f"no configured intent matched (best '{best}', p={best_p:.2f})"
        structured = scores["intent"] + scores["entities"]
        if entities:
            return "entities", 1, structured, f"{unknown}; the message carries {len(entities)} entities"
        return "generation", 2, scores["intent"], f"{unknown}; needs generation"
