"""Reading a request: which task it asks for, the payload it applies to, the labels and entity types it
names, from the reading heads on the request's one encoder pass.

The task head reads the [CLS] state; the span head tags every word piece as payload, label or entity
type (BIO). Rules only finish what is exact: a payload that the head places inside quotes is snapped to
the quotes, label words lose their list punctuation, and entity-type phrases map onto the canonical types
through a lexicon of the nouns people use for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from models.heads import LinearHead
from models.labels import SPAN_TAGS, TASKS
from models.request import ParsedRequest

# Paired quotes around a payload; the opening one must start a word and the closing one end it, so that
# apostrophes inside words ("don't") never count.
_QUOTED = re.compile(r'(?:(?<=^)|(?<=[\s:(\[]))(```|"""|\'\'\'|["\'“‘«])(.+?)(?:```|"""|\'\'\'|["\'”’»])(?=$|[\s.,;:!?)\]])',
                     re.S)
_EDGE = " \t\n\"'“”‘’«»`.,;:!?()[]{}-*•"

# Nouns for entity types, most specific first (a phrase takes the first type whose word it contains).
ENTITY_TYPE_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("EMAIL", ("email", "e-mail", "mail address")),
    ("PHONE", ("phone", "telephone", "mobile number", "cell number")),
    ("URL", ("url", "link", "website", "web address")),
    ("MONEY", ("money", "amount", "price", "cost", "currency", "sum", "dollar", "euro")),
    ("DATE", ("date", "day", "when")),
    ("TIME", ("time", "hour")),
    ("WORK", ("book", "film", "movie", "song", "album", "title", "creative work", "show", "series", "game")),
    ("PRODUCT", ("product", "device", "model", "brand", "gadget", "app")),
    ("ORG", ("company", "companies", "organisation", "organization", "org", "business", "firm", "corporation",
             "institution", "team", "club", "agency", "employer", "bank", "brand")),
    ("LOC", ("location", "place", "city", "cities", "country", "countries", "town", "region", "address", "where",
             "geograph", "state", "capital", "venue", "destination", "continent")),
    ("PER", ("person", "people", "persons", "name", "who", "individual", "human", "player", "politician",
             "author", "character", "celebrit", "customer", "employee", "user", "man", "woman", "men", "women")),
    ("MISC", ("nationalit", "event", "language", "miscellaneous", "other", "religion", "demonym")),
)


def entity_type_of(phrase: str) -> str | None:
    """The canonical entity type a phrase names ("company names" → ORG), or None when unknown."""
    words = phrase.lower()
    for kind, nouns in ENTITY_TYPE_WORDS:
        if any(re.search(rf"\b{re.escape(n)}", words) for n in nouns):
            return kind
    return None


@dataclass
class Reading:
    """The reading heads' output for one request: the parse, and where its parts lie in the pass."""

    parsed: ParsedRequest
    task_scores: dict[str, float]
    payload_pieces: list[int] = field(default_factory=list)
    label_pieces: list[list[int]] = field(default_factory=list)
    unknown_types: list[str] = field(default_factory=list)


def _spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """``(kind, first_piece, last_piece)`` runs from BIO piece tags; a stray I-X opens a new run."""
    runs: list[list] = []
    for i, tag in enumerate(tags):
        if tag == "O":
            continue
        prefix, kind = tag.split("-", 1)
        if prefix == "I" and runs and runs[-1][0] == kind and runs[-1][2] == i - 1:
            runs[-1][2] = i
        else:
            runs.append([kind, i, i])
    return [tuple(r) for r in runs]


class RequestReader:
    """Turns one request's encoder pass into a :class:`Reading`."""

    def __init__(self, task_head: LinearHead, span_head: LinearHead):
        if tuple(task_head.labels) != TASKS or tuple(span_head.labels) != SPAN_TAGS:
            raise ValueError("reading heads do not match models/labels.py (retrain with `tierwise train`)")
        self.task_head, self.span_head = task_head, span_head

    def task_scores(self, cls: np.ndarray) -> np.ndarray:
        """Task probabilities for ``[batch, dim]`` [CLS] states."""
        return self.task_head.predict_proba(cls)

    def read(self, text: str, task: str, task_scores: dict[str, float], tokens: np.ndarray,
             offsets: list[tuple[int, int]]) -> Reading:
        """Parse ``text`` (its piece states ``tokens`` and character ``offsets``, without [CLS]/[SEP]) as a
        request for ``task``."""
        probs = self.span_head.predict_proba(tokens) if len(tokens) else np.zeros((0, len(SPAN_TAGS)))
        tags = [SPAN_TAGS[i] for i in probs.argmax(axis=1)]
        runs = _spans(tags)
        pay = [(a, b) for kind, a, b in runs if kind == "PAY"]
        payload_span = self._payload(text, pay, offsets)
        labels, label_pieces = [], []
        for kind, a, b in runs:
            if kind != "LAB":
                continue
            name = text[offsets[a][0] : offsets[b][1]].strip(_EDGE)
            if name and name.lower() not in (l.lower() for l in labels):
                labels.append(name)
                label_pieces.append(list(range(a, b + 1)))
        types, names, unknown = [], {}, []
        for kind, a, b in runs:
            if kind != "TYP":
                continue
            phrase = text[offsets[a][0] : offsets[b][1]].strip(_EDGE)
            canonical = entity_type_of(phrase)
            if canonical is None:
                unknown.append(phrase)
            elif canonical not in types:
                types.append(canonical)
                names[canonical] = phrase
        if payload_span is None:
            payload, pieces, instruction = "", [], text
        else:
            start, end = payload_span
            payload = text[start:end]
            pieces = [i for i, (s, e) in enumerate(offsets) if s >= start and e <= end and e > s]
            instruction = (text[:start] + " " + text[end:]).strip(_EDGE + " ")
        confidence = float(probs.max(axis=1).min()) if len(probs) else 0.0
        parsed = ParsedRequest(task, payload, instruction, labels, types, names, confidence)
        return Reading(parsed, task_scores, pieces, label_pieces, unknown)

    @staticmethod
    def _payload(text: str, runs: list[tuple[int, int]], offsets) -> tuple[int, int] | None:
        """The payload's character span: the predicted runs joined when only punctuation and quotes lie
        between them (a quote splits a payload in two runs), else the longest; snapped to the quotes
        around it, when the head put it inside a quoted segment."""
        if not runs:
            return None
        merged = [list(runs[0])]
        for a, b in runs[1:]:
            gap = text[offsets[merged[-1][1]][1] : offsets[a][0]]
            if not gap.strip(_EDGE):
                merged[-1][1] = b
            else:
                merged.append([a, b])
        a, b = max(merged, key=lambda r: offsets[r[1]][1] - offsets[r[0]][0])
        start, end = offsets[a][0], offsets[b][1]
        for m in _QUOTED.finditer(text):
            q_start, q_end = m.start(2), m.end(2)
            overlap = min(end, q_end) - max(start, q_start)
            if overlap > 0 and overlap >= 0.5 * min(end - start, q_end - q_start):
                return q_start, q_end
        while start < end and text[start] in _EDGE:
            start += 1
        while end > start and text[end - 1] in _EDGE.replace(".", "").replace("!", "").replace("?", ""):
            end -= 1
        return (start, end) if end > start else None
