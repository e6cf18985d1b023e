"""Tier-1 answers from the heads of the multi-task encoder: sentiment (two- or three-way, in the labels
the request names), classification into a label set the request names, entities (of the types asked),
intent, FAQ, configured intent responses and rules.

A chat request arrives with the router's pass (:class:`RequestPass`: the [CLS] state, the piece states
and where the payload and the labels lie in them), so answering costs no second encoder pass; a direct
task request (``/v1/tasks/*``) is encoded here. Each answer carries a calibrated confidence and says
whether it clears its head's keep threshold (``models/calibration.py``); below it tier 1 is unsure and
the gateway escalates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.calibration import Calibration
from models.encoder import Encoder
from models.entities import Entity, EntityTagger, TaggerHead, pattern_entities
from models.faq import FaqIndex
from models.heads import LinearHead
from models.labels import SENTIMENT2, SENTIMENT3, sentiment_label_map
from models.request import ParsedRequest
from models.rules import RuleEngine

TIER1_TASKS = ("sentiment", "classify", "entities", "intent", "faq", "rule", "intent_response")
# The label scorer (trained in models/training/multitask.py): it starts from what the embedding space already knows,
# the cosine of payload and label states, scaled; a learned bilinear term adds what the wording says.
SCORER_DIM = 128
COSINE_SCALE = 10.0


def label_logits(heads: dict[str, LinearHead], cls: np.ndarray, payload: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The label scorer: how well each label (``labels``: each label span's mean state) fits the payload
    (its mean state), read with the request's [CLS] state; the cosine of payload and label plus a learned
    bilinear term (``models/training/multitask.py``)."""
    query = heads["label_query"].logits(np.concatenate([cls, payload])[None, :])[0]
    keys = heads["label_key"].logits(labels)
    cosine = labels @ payload / (np.linalg.norm(labels, axis=1) * np.linalg.norm(payload) + 1e-8)
    return COSINE_SCALE * cosine + keys @ query / SCORER_DIM**0.5


@dataclass
class RequestPass:
    """One text's encoder output, as tier 1 needs it: [CLS], piece states (no [CLS]/[SEP]), offsets and
    word ids, plus the pieces that hold the payload and each named label."""

    text: str
    cls: np.ndarray
    tokens: np.ndarray
    offsets: list[tuple[int, int]]
    word_ids: list[int]
    pooled: np.ndarray
    payload_pieces: list[int] = field(default_factory=list)
    label_pieces: list[list[int]] = field(default_factory=list)

    @classmethod
    def from_encoded(cls, text: str, encoded, row: int = 0) -> "RequestPass":
        """Row ``row`` of an :class:`~models.encoder.Encoded`, the whole text as payload."""
        n = len(encoded.tokens[row])
        return cls(text, encoded.cls[row], encoded.tokens[row], encoded.offsets[row], encoded.word_ids[row],
                   encoded.pooled[row], list(range(n)))


@dataclass
class Tier1Request:
    """One tier-1 job: the task, the request as read, and the router's pass when it has one.

    ``intent`` and ``response`` name a configured intent response the router matched.
    """

    task: str
    text: str
    parsed: ParsedRequest | None = None
    features: RequestPass | None = None
    intent: str | None = None
    response: str | None = None

    @property
    def needs_encoding(self) -> bool:
        """Whether answering takes an encoder pass (the router's pass is missing)."""
        return self.task not in ("rule", "intent_response") and self.features is None


@dataclass
class Tier1Answer:
    """A tier-1 result: the structured answer, its calibrated confidence, and whether to escalate.

    ``result`` follows the contract ``models/answer_format.py`` renders (label, entities, intent, FAQ…).
    """

    task: str
    result: dict
    confidence: float
    escalate: bool = False
    reason: str = ""
    input_tokens: int = 0


class Tier1Models:
    """The tier-1 heads, the FAQ index and the rules behind one batch function."""

    def __init__(self, encoder: Encoder, heads: dict[str, LinearHead], faq: FaqIndex, rules: RuleEngine,
                 calibration: Calibration, faq_min_confidence: float, overrides: dict[str, float] | None = None):
        self.encoder, self.heads, self.faq, self.rules = encoder, heads, faq, rules
        self.calibration, self.faq_min_confidence = calibration, faq_min_confidence
        self.overrides = dict(overrides or {})
        self.conll = EntityTagger(heads["ner_conll"])
        self.wnut = EntityTagger(heads["ner_wnut"])

    @classmethod
    def from_settings(cls, settings, encoder: Encoder | None = None, faq: FaqIndex | None = None) -> "Tier1Models":
        """Build from a :class:`serve.settings.Settings`, sharing the router's ``encoder`` and ``faq``."""
        encoder = encoder or Encoder(**settings.encoder.model_dump())
        heads_dir = Path(settings.router.heads_dir)
        return cls(encoder, load_heads(heads_dir), faq or FaqIndex.from_file(settings.tier1.faq_path, encoder),
                   RuleEngine(settings.tier1.rules), Calibration.load(heads_dir / "calibration.json"),
                   settings.tier1.faq_min_confidence, settings.tier1.min_confidence)

    def threshold(self, head: str) -> float:
        """The keep threshold of a head: the configured override, else the calibrated one."""
        return self.overrides.get(head, self.calibration.get(head).threshold)

    def answer_batch(self, requests: list[Tier1Request]) -> list[Tier1Answer]:
        """Answer every request; those without the router's pass are encoded here, one pass each."""
        for r in requests:
            if r.task not in TIER1_TASKS:
                raise ValueError(f"tier 1 has no task {r.task!r}; it answers {', '.join(TIER1_TASKS)}")
        todo = [r for r in requests if r.needs_encoding]
        if todo:
            encoded = self.encoder.encode([r.text for r in todo])
            for k, r in enumerate(todo):
                r.features = RequestPass.from_encoded(r.text, encoded, k)
        answers = []
        for r in requests:
            answer = self._answer(r)
            answer.input_tokens = self.encoder.count_tokens(r.text)
            answers.append(answer)
        return answers

    # -- one answer per task --------------------------------------------------------------------------

    def _answer(self, r: Tier1Request) -> Tier1Answer:
        if r.task == "rule":
            hit = self.rules.match(r.text)
            if hit is None:
                return Tier1Answer("rule", {}, 0.0, True, "no rule matches")
            return Tier1Answer("rule", {"rule": hit.name, "answer": hit.answer}, 1.0)
        if r.task == "intent_response":
            return Tier1Answer("intent", {"intent": r.intent, "response": r.response}, 1.0)
        handler = {"sentiment": self._sentiment, "classify": self._classify, "entities": self._entities,
                   "intent": self._intent, "faq": self._faq}[r.task]
        return handler(r.features, r.parsed or ParsedRequest(r.task, r.text))

    def _keep(self, task: str, head: str, result: dict, confidence: float, what: str) -> Tier1Answer:
        threshold = self.threshold(head)
        if confidence < threshold:
            return Tier1Answer(task, result, confidence, True, f"{what} confidence {confidence:.2f} < {threshold:.2f}")
        return Tier1Answer(task, result, confidence)

    def _sentiment(self, f: RequestPass, parsed: ParsedRequest) -> Tier1Answer:
        mapping = sentiment_label_map(parsed.labels) if parsed.labels else None
        if parsed.labels and mapping is None:
            return self._classify(f, parsed)
        classes = set(mapping.values()) if mapping else set(SENTIMENT3)
        head = "sentiment2" if classes == set(SENTIMENT2) else "sentiment3"
        labels = SENTIMENT2 if head == "sentiment2" else SENTIMENT3
        p = self.calibration.probs(head, self.heads[head].logits(f.cls[None, :]))[0]
        best = int(p.argmax())
        named = {v: k for k, v in mapping.items()} if mapping else {c: c for c in labels}
        result = {"label": named[labels[best]], "canonical": labels[best],
                  "scores": {named[c]: round(float(s), 4) for c, s in zip(labels, p)}}
        return self._keep("sentiment", head, result, float(p[best]), "sentiment")

    def _classify(self, f: RequestPass, parsed: ParsedRequest) -> Tier1Answer:
        if len(parsed.labels) < 2 or len(f.label_pieces) != len(parsed.labels):
            return Tier1Answer("classify", {"labels": parsed.labels}, 0.0, True,
                               "the request names fewer than two labels to choose from")
        payload = f.tokens[f.payload_pieces].mean(axis=0) if f.payload_pieces else f.pooled
        labels = np.stack([f.tokens[p].mean(axis=0) for p in f.label_pieces])
        p = self.calibration.probs("labels", label_logits(self.heads, f.cls, payload, labels)[None, :])[0]
        best = int(p.argmax())
        result = {"label": parsed.labels[best], "canonical": parsed.labels[best],
                  "scores": {l: round(float(s), 4) for l, s in zip(parsed.labels, p)}}
        return self._keep("classify", "labels", result, float(p[best]), "label")

    def _entities(self, f: RequestPass, parsed: ParsedRequest) -> Tier1Answer:
        entities, confidence = self.extract(f, parsed.payload or f.text, parsed.entity_types)
        result = {"entities": [e.as_dict() for e in entities], "types": list(parsed.entity_types)}
        return self._keep("entities", "entities", result, confidence, "entity")

    def extract(self, f: RequestPass, payload: str, types: list[str]) -> tuple[list[Entity], float]:
        """Entities of the asked ``types`` (all when empty) in the payload pieces, with the request's
        confidence: the least sure word decision among the payload's words, about the types asked (the
        patterns' types are exact)."""
        pieces = f.payload_pieces or list(range(len(f.tokens)))
        start = f.offsets[pieces[0]][0] if pieces else 0
        end = f.offsets[pieces[-1]][1] if pieces else 0
        learned = [t for t in types if t in self.conll.types.values()] if types else None
        found, confidence = ([], 1.0) if learned == [] else self.conll.tag(
            f.text, f.tokens, f.offsets, f.word_ids, start, end, learned)
        emerging = [t for t in types if t in ("PRODUCT", "WORK")]
        if emerging:
            extra, extra_conf = self.wnut.tag(f.text, f.tokens, f.offsets, f.word_ids, start, end, emerging)
            found += extra
            confidence = min(confidence, extra_conf)
        patterns = [Entity(e.text, e.type, e.start + start, e.end + start, 1.0)
                    for e in pattern_entities(f.text[start:end])]
        kept = [e for e in found if not any(e.start < p.end and p.start < e.end for p in patterns)]
        entities = sorted(kept + patterns, key=lambda e: e.start)
        if types:
            entities = [e for e in entities if e.type in types]
        return [Entity(e.text, e.type, e.start - start, e.end - start, e.confidence) for e in entities], confidence

    def _intent(self, f: RequestPass, parsed: ParsedRequest) -> Tier1Answer:
        """The intent from CLINC150's 150 everyday intents (with out-of-scope) or Banking77's 77 banking
        ones: the set whose head is surer, relative to its keep threshold, answers."""
        candidates = []
        for head in ("clinc150", "banking77"):
            p = self.calibration.probs(head, self.heads[head].logits(f.cls[None, :]))[0]
            labels = self.heads[head].labels
            top = np.argsort(p)[::-1][:3]
            candidates.append((float(p[top[0]]) - self.threshold(head), head, labels[int(top[0])], float(p[top[0]]),
                               [{"intent": labels[i], "score": round(float(p[i]), 4)} for i in top]))
        _, head, best, confidence, top = max(candidates, key=lambda c: (c[2] != "oos", c[0]))
        result = {"intent": "out_of_scope" if best == "oos" else best, "intent_set": head, "top": top}
        if best == "oos":
            return Tier1Answer("intent", result, confidence, True, "the intent is out of scope")
        if all(margin >= 0 and label != "oos" for margin, _, label, _, _ in candidates):
            # Both intent sets claim the message ("my card payment" is in each): which names it is a guess.
            return Tier1Answer("intent", result, confidence, True, "the intent fits both intent sets")
        return self._keep("intent", head, result, confidence, "intent")

    def _faq(self, f: RequestPass, parsed: ParsedRequest) -> Tier1Answer:
        (match,) = self.faq.best(f.pooled[None, :])
        result = {"faq_id": match.entry.id, "question": match.entry.question, "matched": match.phrasing,
                  "answer": match.entry.answer, "score": round(match.score, 4)}
        p = self.calibration.score_prob("faq", match.score)
        if p < self.faq_min_confidence:
            return Tier1Answer("faq", result, p, True, f"best FAQ match '{match.entry.id}' scored {match.score:.2f} "
                                                       f"(p={p:.3f} < {self.faq_min_confidence})")
        return Tier1Answer("faq", result, p)


HEAD_NAMES = ("task", "span", "sentiment2", "sentiment3", "banking77", "clinc150", "ner_conll", "ner_wnut",
              "label_query", "label_key")
TAGGERS = ("ner_conll", "ner_wnut")


def load_heads(heads_dir: Path) -> dict:
    """Every head of the multi-task model, from ``heads_dir``: :class:`LinearHead` objects, and the two
    taggers as :class:`~models.entities.TaggerHead` (their hidden layer in ``<name>_hidden.npz``)."""
    names = [*HEAD_NAMES, *(f"{t}_hidden" for t in TAGGERS)]
    missing = [n for n in names if not (Path(heads_dir) / f"{n}.npz").exists()]
    if missing:
        raise FileNotFoundError(f"{heads_dir}: heads {', '.join(missing)} are missing; run `tierwise train`")
    heads: dict = {n: LinearHead.load(Path(heads_dir) / f"{n}.npz") for n in names}
    for t in TAGGERS:
        heads[t] = TaggerHead(heads.pop(f"{t}_hidden"), heads[t])
    return heads
