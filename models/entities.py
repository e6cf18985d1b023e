"""Entity extraction on the shared encoder pass: a tagging head per word plus pattern entities.

The multi-task encoder reads casing from its token types (``models/encoder.py``); a tagger reads each
word's first-piece state and its neighbours' through a small MLP: the CoNLL-2003 tagger tags PER, ORG, LOC
and MISC, the WNUT-17 tagger products and creative works among its six types. Patterns add what a news corpus does not tag but users ask for and
PII rules need: dates, times, e-mails, phones, URLs, money and card numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from models.heads import LinearHead
from models.labels import WNUT_CANONICAL

PII_TYPES = frozenset({"PER", "EMAIL", "PHONE", "CARD"})

_DAYS = r"(?:mon|tues|wednes|thurs|fri|satur|sun)day"
_MONTHS = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("EMAIL", re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")),
    ("URL", re.compile(r"\bhttps?://\S+")),
    ("CARD", re.compile(r"\b(?:\d[ -]?){13,16}\b")),
    ("PHONE", re.compile(r"(?<!\w)\+?\d[\d ().-]{7,}\d\b")),
    ("MONEY", re.compile(r"(?:[$€£]\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)?\s?(?:usd|eur|gbp|dollars|euros|pounds)\b)", re.I)),
    ("DATE", re.compile(rf"\b(?:{_DAYS}|{_MONTHS}\.? \d{{1,2}}(?:st|nd|rd|th)?(?:,? \d{{4}})?|\d{{1,2}} {_MONTHS}(?: \d{{4}})?|\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}/\d{{1,2}}/\d{{2,4}}|today|tomorrow|yesterday)\b", re.I)),
    ("TIME", re.compile(r"\b\d{1,2}(?::\d{2})?\s?(?:am|pm)\b|\b\d{1,2}:\d{2}\b", re.I)),
]


@dataclass(frozen=True)
class Entity:
    """One entity span: character offsets into the text, its type and a confidence."""

    text: str
    type: str
    start: int
    end: int
    confidence: float

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return {"text": self.text, "type": self.type, "start": self.start, "end": self.end,
                "confidence": round(self.confidence, 4)}


def word_spans(offsets: list[tuple[int, int]], word_ids: list[int]) -> list[tuple[int, int, int]]:
    """``(first_piece_index, start_char, end_char)`` for each word of an encoded text."""
    spans: dict[int, list[int]] = {}
    for piece, (word, (start, end)) in enumerate(zip(word_ids, offsets)):
        if word < 0:
            continue
        if word not in spans:
            spans[word] = [piece, start, end]
        else:
            spans[word][2] = end
    return [tuple(v) for _, v in sorted(spans.items())]


def decode_bio(text: str, spans, probs: np.ndarray, labels: tuple[str, ...]) -> list[Entity]:
    """Turn per-word BIO probabilities into entity spans; a stray I-X opens a new X span."""
    entities: list[Entity] = []
    current: list = []  # [type, start, end, [confidences]]
    for (_, start, end), p in zip(spans, probs):
        tag = labels[int(p.argmax())]
        if tag == "O":
            if current:
                entities.append(current)
            current = []
            continue
        prefix, kind = tag.split("-", 1)
        if prefix == "I" and current and current[0] == kind:
            current[2] = end
            current[3].append(float(p.max()))
        else:
            if current:
                entities.append(current)
            current = [kind, start, end, [float(p.max())]]
    if current:
        entities.append(current)
    return [Entity(text[s:e], k, s, e, float(np.mean(c))) for k, s, e, c in entities]


def pattern_entities(text: str) -> list[Entity]:
    """Entities found by the patterns, earlier patterns winning overlaps."""
    found: list[Entity] = []
    for kind, pattern in PATTERNS:
        for m in pattern.finditer(text):
            if not any(m.start() < e.end and e.start < m.end() for e in found):
                found.append(Entity(m.group(0), kind, m.start(), m.end(), 1.0))
    return found


def word_features(states: np.ndarray) -> np.ndarray:
    """A tagger's input per word: the word's first-piece state, then the previous and the next word's
    (zeros at the edges); a word's neighbours tell "Mr" before "Smith" and "Bank" after "Deutsche"."""
    zero = np.zeros((1, states.shape[1]), dtype=states.dtype)
    return np.hstack([states, np.vstack([zero, states[:-1]]), np.vstack([states[1:], zero])])


@dataclass(frozen=True)
class TaggerHead:
    """A small MLP over :func:`word_features`: ``out(relu(hidden(x)))``, BIO probabilities per word."""

    hidden: LinearHead
    out: LinearHead

    @property
    def labels(self) -> tuple[str, ...]:
        """The BIO tags."""
        return self.out.labels

    def predict_proba(self, word_states: np.ndarray) -> np.ndarray:
        """Tag probabilities for the first-piece states of a run of words."""
        return self.out.predict_proba(np.maximum(self.hidden.logits(word_features(word_states)), 0.0))


class EntityTagger:
    """One BIO tagging head over words; its types are mapped onto the canonical ones (WNUT's ``product``
    becomes PRODUCT, ``creative-work`` WORK, ``corporation`` and ``group`` ORG)."""

    def __init__(self, head: TaggerHead):
        self.head = head
        self.types = {t: WNUT_CANONICAL.get(t, t) for t in {l.split("-", 1)[1] for l in head.labels if l != "O"}}

    def tag(self, text: str, states: np.ndarray, offsets, word_ids, start: int = 0, end: int | None = None,
            types: list[str] | None = None) -> tuple[list[Entity], float]:
        """Entities among the words inside characters ``[start, end)`` (of the canonical ``types`` only,
        when given), and how sure the tagger is of that whole answer, "no entity here" included: the least
        sure word decision (with ``types``, the decision whether a word is one of them)."""
        end = len(text) if end is None else end
        spans = [s for s in word_spans(offsets, word_ids) if s[1] >= start and s[2] <= end]
        if not spans:
            return [], 1.0
        probs = self.head.predict_proba(states[[s[0] for s in spans]])
        entities = [Entity(e.text, self.types[e.type], e.start, e.end, e.confidence)
                    for e in decode_bio(text, spans, probs, self.head.labels)]
        if types is None:
            return entities, float(probs.max(axis=1).min())
        asked = [i for i, label in enumerate(self.head.labels) if label != "O" and self.types[label[2:]] in types]
        inside = probs[:, asked].sum(axis=1)
        return [e for e in entities if e.type in types], float(np.maximum(inside, 1 - inside).min())
