"""The learned router: one encoder pass per request gives the task asked, the proposed tier, a calibrated
confidence, the reason, the scores behind it, the request as read (payload, labels, entity types), a PII
flag, the states tier 1 answers from, and the predicted quality of each tier-2 model.

A generative request goes to tier 2 when some tier-2 model has a calibrated probability of at least
``router.quality.threshold`` of answering well enough (its quality head, ``models/quality.py``, stacked
with how much the request reads as reasoning, the earlier turns included), and to tier 3 otherwise; its
confidence is then that probability (tier 2 suffices) or its complement.

Tier 1 gets a request only when it asks for a tier-1 task (sentiment, classification into labels it
names, entity extraction, intent classification), matches a FAQ entry or a rule, or matches an intent that
has a configured response; an intent label is never the answer to a question. Plain Python, no Ray:
``deployments/router.py`` wraps :meth:`Router.route_batch` and ``tierwise route`` calls it in-process.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.calibration import Calibration
from models.encoder import Encoder
from models.entities import PII_TYPES, Entity, EntityTagger, pattern_entities, word_spans
from models.faq import FaqIndex, FaqMatch
from models.labels import TASKS, sentiment_label_map
from models.quality import QUALITY_FILE, QualityHeads, canonical
from models.reader import Reading, RequestReader
from models.request import ParsedRequest, reader_text
from models.rules import RuleEngine
from models.tier1 import TIER1_TASKS, RequestPass, Tier1Request, load_heads

# What a tier-1 answer cannot be, read from the instruction's own words (exact): an explanation, several
# answers, a rating on a numeric scale.
_EXPLANATION = re.compile(r"\b(?:explain|explanation|why|reasons?|reasoning|justify|justification|describe|"
                          r"elaborate|summari[sz]e|summary|comment on|what makes)\b", re.I)
_NEGATED = re.compile(r"\b(?:no|without|don'?t|do not|never|nothing|not)\s+(?:\w+\s+){0,2}$", re.I)
_DOCUMENTS = r"(?:review|tweet|sentence|text|message|comment|post|ticket|email|item|line|document)"
_SEVERAL = re.compile(rf"\b(?:each|every|all) of (?:these|the following|them)\b|\bone by one\b|"
                      rf"\b(?:each|every) {_DOCUMENTS}\b|\b(?:these|those|both|the following) {_DOCUMENTS}s\b", re.I)
_ENUMERATED = re.compile(r"(?:^|\s)(?:\d+[.)]|[-*•])\s+\S")
_RATING = re.compile(r"\b\d+\s*(?:-|–|to|/)\s*\d+\b|\bstars?\b|\bout of \d+|\bscore\b|\brat(?:e|ing)\b", re.I)

TASK_TIER = {"sentiment": 1, "classify": 1, "entities": 1, "intent": 1, "faq": 1, "generation": 2, "reasoning": 3}
ASKED_TIER1 = frozenset({"sentiment", "classify", "entities", "intent"})
# Sentiment is classification into a sentiment scale: the task head is sure a label is asked for, and the
# labels the request names (exactly) say which kind.
LABEL_TASKS = ("sentiment", "classify")


def asked_task(scores: dict[str, float]) -> tuple[str, float]:
    """The task a request asks for and its probability, sentiment and classification taken together."""
    task = max(scores, key=scores.get)
    if task in LABEL_TASKS:
        return task, sum(scores[t] for t in LABEL_TASKS)
    return task, scores[task]


def text_windows(tokenizer, text: str, budget: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans of windows of at most ``budget`` word pieces (by ``tokenizer``, untruncated and
    without special tokens) that together cover every word of ``text``.

    A window ends where a word follows whitespace, so the pieces of a window read alone are the pieces it
    had in the whole text (only a run of more than ``budget`` pieces without whitespace is cut between the
    words the pre-tokenizer splits). Each window after the first starts up to ``overlap`` pieces before
    the previous one ends: a name cut at one window's edge is read whole, with its context, in the next.
    """
    encoding = tokenizer.encode(text, add_special_tokens=False)
    words = word_spans(encoding.offsets, [-1 if w is None else w for w in encoding.word_ids])
    first_piece = [piece for piece, _, _ in words] + [len(encoding.ids)]
    after_space = [i > 0 and text[words[i][1] - 1].isspace() for i in range(len(words))]
    windows: list[tuple[int, int]] = []
    first = 0
    while first < len(words):
        end = first + 1
        while end < len(words) and first_piece[end + 1] - first_piece[first] <= budget:
            end += 1
        if end < len(words):
            end = next((i for i in range(end, first, -1) if after_space[i]), end)
        windows.append((words[first][1], words[end - 1][2]))
        if end == len(words):
            break
        first = next((i for i in range(first + 1, end)
                      if after_space[i] and first_piece[end] - first_piece[i] <= overlap), end)
    return windows


def merge_overlapping(text: str, entities: list[Entity]) -> list[Entity]:
    """``entities`` sorted, each run of overlapping ones joined into one span of the first one's type with
    the highest confidence among them (the same name tagged in two overlapping windows, or tagged whole in
    one and in part in the other, is one name)."""
    merged: list[Entity] = []
    for e in sorted(entities, key=lambda e: (e.start, e.end)):
        if merged and e.start < merged[-1].end:
            last = merged[-1]
            end = max(last.end, e.end)
            merged[-1] = Entity(text[last.start:end], last.type, last.start, end, max(last.confidence, e.confidence))
        else:
            merged.append(e)
    return merged


@dataclass(frozen=True)
class RouteInput:
    """What the router sees: the newest user message, the system prompt and the earlier turns."""

    text: str
    context: str = ""
    system: str = ""


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
    intent: str | None = None
    intent_response: str | None = None
    parsed: ParsedRequest | None = None
    features: RequestPass | None = None
    embedding: np.ndarray | None = None
    # Calibrated P(tier 2 answers well enough), by the benchmark model a tier-2 model stands in for
    # (quality_as): its quality head's prediction stacked with the reasoning signal (models/quality.py).
    quality: dict[str, float] = field(default_factory=dict)
    # The PII tagger runs on first use of ``entities`` (it costs ~0.7 ms a request, and only /v1/route and
    # `tierwise route` read it); pickling (a decision leaving the Router deployment) runs it first.
    tag_entities: Callable[[], list[Entity]] | None = field(default=None, repr=False, compare=False)
    _entities: list[Entity] | None = field(default=None, repr=False, compare=False)

    @property
    def entities(self) -> list[Entity]:
        """Named entities and PII patterns in the newest user message."""
        if self._entities is None:
            self._entities = self.tag_entities() if self.tag_entities else []
        return self._entities

    @property
    def pii(self) -> bool:
        """Whether the newest user message holds personal data (a person, an e-mail, a phone number, ...)."""
        return any(e.type in PII_TYPES for e in self.entities)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_entities"], state["tag_entities"] = self.entities, None
        return state

    def tier1_request(self, text: str) -> Tier1Request:
        """The tier-1 job this decision stands for; ``text`` is the newest user message. A decision for
        another tier (a client that pinned the tier-1 model) gets the likeliest tier-1 task."""
        if self.intent_response is not None:
            return Tier1Request("intent_response", text, intent=self.intent, response=self.intent_response)
        task = self.task
        if task not in TIER1_TASKS:
            task = max(("sentiment", "entities", "intent", "faq"), key=lambda t: self.scores.get(t, 0.0))
        return Tier1Request(task, text, parsed=self.parsed, features=self.features)

    def explain(self) -> dict:
        """The JSON-ready scores and signals behind the decision."""
        out = {
            "tasks": {k: round(v, 4) for k, v in self.scores.items()},
            "faq": {"id": self.faq_id, "score": round(self.faq_score, 4)},
            "rule": self.rule,
            "intent": self.intent,
            "pii": self.pii,
        }
        if self.quality:
            out["quality"] = {k: round(v, 4) for k, v in self.quality.items()}
        if self.parsed is not None:
            out["parsed"] = {"payload": self.parsed.payload, "labels": self.parsed.labels,
                             "entity_types": self.parsed.entity_types, "confidence": round(self.parsed.confidence, 4)}
        return out


@dataclass(frozen=True)
class RouterThresholds:
    """Knobs of the decision, from the ``router`` and ``tier1`` settings."""

    context_weight: float = 0.3
    faq_min_confidence: float = 0.979
    # A generative request stays on tier 2 when some tier-2 model's predicted quality reaches this.
    quality_threshold: float = 0.5
    # The benchmark models the deployed tier-2 models stand in for (their quality heads).
    tier2_quality_as: tuple[str, ...] = ("mixtral-8x7b-instruct",)


class Router:
    """Routes batches of requests, one encoder pass per text."""

    def __init__(self, encoder: Encoder, reader: RequestReader, heads: dict, faq: FaqIndex, rules: RuleEngine,
                 calibration: Calibration, thresholds: RouterThresholds, intent_responses: dict[str, str],
                 overrides: dict[str, float] | None = None, quality: QualityHeads | None = None):
        self.encoder, self.reader, self.heads, self.faq, self.rules = encoder, reader, heads, faq, rules
        self.calibration, self.thresholds, self.intent_responses = calibration, thresholds, intent_responses
        self.overrides = dict(overrides or {})
        self.tagger = EntityTagger(heads["ner_conll"])
        # Only the tier-2 models' stand-ins are predicted, per request.
        self.quality = quality.select(thresholds.tier2_quality_as) if quality else None

    @classmethod
    def from_settings(cls, settings, encoder: Encoder | None = None) -> "Router":
        """Build from a :class:`serve.settings.Settings` (encoder, heads, FAQ, rules and intents it names)."""
        encoder = encoder or Encoder(**settings.encoder.model_dump())
        heads_dir = Path(settings.router.heads_dir)
        heads = load_heads(heads_dir)
        quality = settings.router.quality
        thresholds = RouterThresholds(settings.router.context_weight, settings.tier1.faq_min_confidence, quality.threshold,
                                      tuple(dict.fromkeys(canonical(m.quality_as or quality.tier2_as)
                                                          for m in settings.tier2.models)) or (canonical(quality.tier2_as),))
        return cls(encoder, RequestReader(heads["task"], heads["span"]), heads,
                   FaqIndex.from_file(settings.tier1.faq_path, encoder), RuleEngine(settings.tier1.rules),
                   Calibration.load(heads_dir / "calibration.json"), thresholds,
                   dict(settings.tier1.intent_responses), settings.tier1.min_confidence,
                   QualityHeads.load(heads_dir / QUALITY_FILE))

    def route_batch(self, inputs: list[RouteInput]) -> list[RouteDecision]:
        """Decide for every input. Each request is one pass over its text (system prompt and message
        together); a system prompt adds a pass over the message alone, for FAQ and intent matching, and
        earlier turns one over the context."""
        texts: list[str] = []
        rows = []
        for item in inputs:
            main = len(texts)
            texts.append(reader_text(item.system, item.text))
            user = main
            if item.system:
                user = len(texts)
                texts.append(item.text)
            context = None
            if item.context:
                context = len(texts)
                texts.append(item.context)
            rows.append((main, user, context))
        encoded = self.encoder.encode(texts)
        passes = [RequestPass.from_encoded(t, encoded, k) for k, t in enumerate(texts)]
        task_probs = self.calibration.probs("task", self.heads["task"].logits(encoded.cls))
        quality = self._quality(texts, encoded.pooled, rows)
        w = self.thresholds.context_weight
        decisions = []
        for item, (main, user, context) in zip(inputs, rows):
            p = task_probs[main] if context is None else (1 - w) * task_probs[main] + w * task_probs[context]
            decision = self._decide(item, dict(zip(TASKS, map(float, p))), passes[main], passes[user])
            if (context is not None and decision.tier == 1 and decision.task in ASKED_TIER1
                    and decision.parsed is not None and (item.system or decision.parsed.instruction.strip())):
                # A tier-1 ask that states its instruction reads its whole input from the message, so the
                # message's own ask says how sure the router is that tier 1 suffices: a fresh question may
                # leave a conversation's tier (a bare "Why?" states none, and stays with the thread).
                task, own = asked_task(dict(zip(TASKS, map(float, task_probs[main]))))
                if task == decision.task or {task, decision.task} <= set(LABEL_TASKS):
                    decision.confidence = max(decision.confidence, own)
            if quality is not None:
                suffices = self._suffices(quality[user], task_probs[main])
                if context is not None:
                    # Tier 2 carries a follow-up only if it can carry the thread: "make it shorter" after a
                    # hard question is as hard as that question.
                    suffices = np.minimum(suffices, self._suffices(quality[context], task_probs[context]))
                decision.quality = dict(zip(self.thresholds.tier2_quality_as, map(float, suffices)))
                if decision.tier >= 2:
                    self._tier_by_quality(decision)
            decision.tag_entities = lambda f=passes[user]: self._pii_entities(f)
            decision.embedding = passes[user].pooled
            decisions.append(decision)
        return decisions

    def pii_entities(self, texts: list[str]) -> list[list[Entity]]:
        """The person names (PER) the tagger finds in each text, over the whole of it however long, with
        offsets into that text.

        Routing reads only the first ``max_tokens`` pieces of a text; PII redaction has to read all of it,
        so a longer text is tagged in overlapping windows that fit the encoder (:func:`text_windows`),
        all windows of all texts in one encoder pass, and a name seen in two windows is kept once."""
        budget = self.encoder.max_tokens - 2  # [CLS] and [SEP] take two of the encoder's pieces
        windows = [(k, start, end) for k, text in enumerate(texts)
                   for start, end in text_windows(self.encoder.counter, text, budget, budget // 8)]
        names: list[list[Entity]] = [[] for _ in texts]
        if not windows:
            return names
        encoded = self.encoder.encode([texts[k][start:end] for k, start, end in windows])
        for row, (k, start, end) in enumerate(windows):
            found, _ = self.tagger.tag(texts[k][start:end], encoded.tokens[row], encoded.offsets[row],
                                       encoded.word_ids[row], types=["PER"])
            names[k] += [Entity(e.text, e.type, start + e.start, start + e.end, e.confidence) for e in found]
        return [merge_overlapping(text, found) for text, found in zip(texts, names)]

    def _suffices(self, quality: np.ndarray, task_probs: np.ndarray) -> np.ndarray:
        """P(tier 2 suffices) per tier-2 stand-in, from their predicted quality and the text's reasoning share."""
        generation, reasoning = task_probs[TASKS.index("generation")], task_probs[TASKS.index("reasoning")]
        share = reasoning / max(generation + reasoning, 1e-9)
        return self.quality.tier2_suffices(quality, np.full(len(quality), share))

    def _quality(self, texts: list[str], pooled: np.ndarray, rows: list[tuple]) -> dict[int, np.ndarray] | None:
        """Predicted quality for the tier-2 models' stand-ins, by pass, of the passes it is read from (the
        message alone and the earlier turns); None without heads."""
        if self.quality is None:
            return None
        read = sorted({k for _, user, context in rows for k in (user, context) if k is not None})
        return dict(zip(read, self.quality.predict(pooled[read], [texts[k] for k in read])))

    def _tier_by_quality(self, decision: RouteDecision) -> None:
        """Tier 2 when some tier-2 model is predicted to answer well enough, else tier 3."""
        best = max(decision.quality, key=decision.quality.get)
        p, threshold = decision.quality[best], self.thresholds.quality_threshold
        decision.tier = 2 if p >= threshold else 3
        decision.confidence = p if decision.tier == 2 else 1 - p
        decision.reason += (f"; predicted quality on tier 2 ({best}): P(tier 2 suffices)={p:.2f} "
                            f"{'≥' if decision.tier == 2 else '<'} threshold {threshold:.2f}")

    def _pii_entities(self, f: RequestPass) -> list[Entity]:
        found, _ = self.tagger.tag(f.text, f.tokens, f.offsets, f.word_ids)
        patterns = pattern_entities(f.text)
        return sorted([e for e in found if not any(e.start < p.end and p.start < e.end for p in patterns)]
                      + patterns, key=lambda e: e.start)

    def _decide(self, item: RouteInput, scores: dict[str, float], f: RequestPass, user: RequestPass) -> RouteDecision:
        (match,) = self.faq.best(user.pooled[None, :])
        faq = {"faq_id": match.entry.id, "faq_score": match.score}
        task, confidence = asked_task(scores)
        rule = self.rules.match(item.text)
        if rule:
            return RouteDecision("rule", 1, 1.0, f"rule '{rule.name}' matched", scores, rule=rule.name, **faq)
        asked = task in ASKED_TIER1
        if asked and confidence >= self._threshold("task"):
            return self._asked(task, confidence, scores, f, faq)
        # A FAQ entry or an intent matches the message itself, never a text it wraps ("Translate 'What is
        # your return policy?' into German" is not the FAQ question).
        if self._wraps_a_text(f):
            decision = self._generative(task, confidence, scores, match, "oos", 0.0, faq)
            decision.reason += "; the message wraps a text, which no FAQ entry or intent answers"
            return decision
        # The calibrated probability that the entry is right, like every other decision's confidence, so
        # the thresholds (this one, stickiness) mean the same for a FAQ match.
        p_faq = self.calibration.score_prob("faq", match.score)
        if p_faq >= self.thresholds.faq_min_confidence:
            return RouteDecision("faq", 1, p_faq, f"FAQ entry '{match.entry.id}' matched (score {match.score:.2f}, "
                                 f"p={p_faq:.2f})", scores, features=user, **faq)
        intent, p_intent = self._intent(user)
        if intent in self.intent_responses and p_intent >= self._threshold("clinc150"):
            response = self.intent_responses[intent].format(intent=intent)
            return RouteDecision("intent", 1, p_intent, f"intent '{intent}' (p={p_intent:.2f}) has a configured "
                                 "response", scores, intent=intent, intent_response=response, **faq)
        if asked:
            generative = max(("generation", "reasoning"), key=scores.get)
            return RouteDecision(generative, TASK_TIER[generative], 1 - confidence,
                                 f"classifier: {task} asked (p={confidence:.2f}), below the task threshold "
                                 f"{self._threshold('task'):.2f}: unsure what is asked", scores, **faq)
        return self._generative(task, confidence, scores, match, intent, p_intent, faq)

    def _asked(self, task: str, confidence: float, scores: dict[str, float], f: RequestPass, faq: dict) -> RouteDecision:
        """A request asking for a tier-1 task: read it, and keep it on tier 1 only if it reads right."""
        generative = max(("generation", "reasoning"), key=scores.get)
        reason = f"classifier: {task} asked (p={confidence:.2f})"
        reading = self.reader.read(f.text, task, scores, f.tokens, f.offsets)
        parsed = reading.parsed
        if task in LABEL_TASKS:
            # Labels that form a sentiment scale, or none when sentiment itself was asked, mean sentiment.
            scale = sentiment_label_map(parsed.labels) is not None if parsed.labels else task == "sentiment"
            task = parsed.task = "sentiment" if scale else "classify"
            reason += f"; labels {parsed.labels}: {'a sentiment scale' if scale else 'classification'}" if parsed.labels else ""
        problem = self._unreadable(task, reading)
        if problem:
            return RouteDecision(task, TASK_TIER[generative], confidence, f"{reason}; {problem}", scores,
                                 parsed=parsed, **faq)
        features = RequestPass(f.text, f.cls, f.tokens, f.offsets, f.word_ids, f.pooled, reading.payload_pieces,
                               reading.label_pieces)
        return RouteDecision(task, 1, confidence, reason, scores, parsed=parsed, features=features, **faq)

    @staticmethod
    def _unreadable(task: str, reading: Reading) -> str | None:
        """Why tier 1 cannot answer a request it was asked, as read; None when it can."""
        parsed = reading.parsed
        if not parsed.payload.strip():
            return "no text to apply the task to was found"
        if any(not _NEGATED.search(parsed.instruction[: m.start()]) for m in _EXPLANATION.finditer(parsed.instruction)):
            return "it asks for an explanation, more than the answer tier 1 gives"
        if _SEVERAL.search(parsed.instruction) or len(_ENUMERATED.findall(parsed.payload)) >= 2:
            return "it asks about several texts at once"
        if task in LABEL_TASKS and (
                (not parsed.labels and _RATING.search(parsed.instruction))
                or (parsed.labels and all(re.fullmatch(r"[\d.]+", label) for label in parsed.labels))):
            return "it asks for a rating on a numeric scale, which tier 1 does not give"
        if task == "classify" and len(parsed.labels) < 2:
            return "no label set to choose from was found"
        if task == "entities" and reading.unknown_types:
            return f"asks for entity types tier 1 does not know: {', '.join(reading.unknown_types)}"
        return None

    def _wraps_a_text(self, f: RequestPass) -> bool:
        """Whether the request is an instruction around a text (the reading head finds a payload that is
        not most of the message)."""
        payload = self.reader.payload(f.text, f.tokens, f.offsets)
        return bool(payload) and len(payload) < 0.7 * len(f.text.strip())

    def _intent(self, f: RequestPass) -> tuple[str, float]:
        p = self.calibration.probs("clinc150", self.heads["clinc150"].logits(f.cls[None, :]))[0]
        return self.heads["clinc150"].labels[int(p.argmax())], float(p.max())

    def _threshold(self, head: str) -> float:
        return self.overrides.get(head, self.calibration.get(head).threshold)

    def _generative(self, task: str, confidence: float, scores: dict[str, float], match: FaqMatch, intent: str,
                    p_intent: float, faq: dict) -> RouteDecision:
        generative = task if task in ("generation", "reasoning") else max(("generation", "reasoning"), key=scores.get)
        reason = f"classifier: {task} (p={confidence:.2f})"
        if task == "faq":
            reason = (f"FAQ-style question with no matching entry (best '{match.entry.id}', score "
                      f"{match.score:.2f}, p={self.calibration.score_prob('faq', match.score):.3f} < "
                      f"{self.thresholds.faq_min_confidence}); needs generation")
        elif intent != "oos" and p_intent >= 0.5:
            reason += f"; intent '{intent}' has no configured response: a question for a generative tier"
        return RouteDecision(generative, TASK_TIER[generative], confidence if task == generative else scores[generative],
                             reason, scores, intent=intent if intent != "oos" else None, **faq)
