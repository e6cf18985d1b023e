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
    ("MISC", ("nationalit", "event", "language", "misc", "other", "religion", "demonym")),
)
# A phrase that names no type in particular ("the named entities", "entity") asks for every type.
_ANY_ENTITY = re.compile(r"(?:(?:all|the|every|any|named|its|their)\s+)*entit(?:y|ies)(?:\s+types?)?", re.I)


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


_KINDS = ("O", "PAY", "LAB", "TYP")
_TYPE_SEPARATORS = re.compile(r"\s*(?:,\s*(?:and|or)?|\s+and\s+|\s+or\s+|/|&|\+|;)\s*", re.I)
# What may separate the items of a label list ("a, b or c", "a/b/c", "a | b", "a; b", one per line).
_LIST_SEPARATORS = re.compile(r"\s*(?:,\s*(?:or|and)\s+|,|\s+or\s+|/|\||;|\n+|•)\s*", re.I)
_BETWEEN_LABELS = re.compile(r"^[\s,;/|•\-\n\"'“”‘’«»()\[\]{}]*(?:(?:or|and|nor)[\s,;/|\"'“”‘’«»()\[\]{}]*)?$", re.I)


def _runs(probs: np.ndarray, split: bool = True) -> list[tuple[str, int, int]]:
    """``(kind, first_piece, last_piece)`` runs from the span head's probabilities: each piece takes the
    kind with the most mass (B and I together), and (with ``split``) a run of one kind splits where a piece
    is likelier to begin an item than to continue one (two labels side by side)."""
    kinds = np.stack([probs[:, 0]] + [probs[:, 2 * k - 1] + probs[:, 2 * k] for k in (1, 2, 3)], axis=1)
    runs: list[list] = []
    for i, k in enumerate(kinds.argmax(axis=1)):
        kind = _KINDS[k]
        if kind == "O":
            continue
        begins = split and probs[i, 2 * k - 1] > probs[i, 2 * k]
        if runs and runs[-1][0] == kind and runs[-1][2] == i - 1 and not begins:
            runs[-1][2] = i
        else:
            runs.append([kind, i, i])
    return [tuple(r) for r in runs]


_WORD = re.compile(r"[\w'’-]+")
_FUNCTION_WORDS = frozenset({"the", "a", "an", "all", "any", "every", "each", "named", "mentioned", "of", "in", "and",
                             "or", "here", "there", "this", "that", "these", "those", "its", "their"})
# One more list item before the list the head found: a short phrase after a cue (":", "(", "as", "into"…).
_ITEM_BEFORE = re.compile(r"(?:^|[\s:(\[\"“'])((?:[\w'’-]+\s+){0,2}[\w'’-]+)"
                          r"((?:\s*,\s*|\s+or\s+|\s*/\s*|\s*\|\s*|\s*;\s*))$", re.I)
# One more list item after the list the head found, up to where the list ends.
_ITEM_AFTER = re.compile(r"^((?:\s*,\s*(?:or|and)\s+|\s*,\s*|\s+or\s+|\s*/\s*|\s*\|\s*|\s*;\s*|\n\s*(?:[-*•]|\d+[.)])\s*))"
                         r"([^\n.?!:;,/|()\[\]\"“”«»]{1,40}?)(?=\s*(?:[\n.?!:;,/|)\]\"“”«»']|$|\s+or\s))", re.I)


def _snap_to_words(text: str, start: int, end: int) -> tuple[int, int]:
    """A span widened to whole words (word pieces never split a label)."""
    while start > 0 and _WORD.match(text[start - 1]) and _WORD.match(text[start]):
        start -= 1
    while end < len(text) and _WORD.match(text[end]) and _WORD.match(text[end - 1]):
        end += 1
    return start, end


def pieces_within(offsets: list[tuple[int, int]], start: int, end: int) -> list[int]:
    """The word pieces whose characters lie inside ``[start, end)``."""
    return [i for i, (a, b) in enumerate(offsets) if a >= start and b <= end and b > a]


def _first_label_word(match: re.Match, probs: np.ndarray, offsets) -> int | None:
    """Where, in the phrase a list separator follows, the first word the head gives a little label
    probability starts (the words before it are the instruction's: "as *complaint*"); None when no word
    has any (the phrase is the instruction's, not one more label)."""
    for w in _WORD.finditer(match.group(1)):
        pieces = pieces_within(offsets, match.start(1) + w.start(), match.start(1) + w.end())
        if pieces and (probs[pieces, 3] + probs[pieces, 4]).mean() >= 0.02:
            return match.start(1) + w.start()
    return None


def _label_items(text: str, probs: np.ndarray, offsets) -> list[tuple[int, int]]:
    """Character spans of the labels a request offers.

    The head says where the list is: pieces it tags as labels, grown to neighbours it gives some label
    probability and to list separators between them (hysteresis, so one unsure word does not cut a list);
    the list with the most label pieces wins. The list's own separators (exact) then split it, and an item
    the head left out at the end (up to the punctuation that closes the list) is taken too.
    """
    label_p = probs[:, 3] + probs[:, 4]
    strong = label_p >= np.maximum(probs[:, 0], np.maximum(probs[:, 1] + probs[:, 2], probs[:, 5] + probs[:, 6]))
    if not strong.any():
        return []
    words = [text[a:b] for a, b in offsets]
    member = (label_p >= 0.15) | np.array([_BETWEEN_LABELS.match(w) is not None for w in words])
    groups, current = [], []
    for i in range(len(offsets)):
        if member[i]:
            current.append(i)
        elif current:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    groups = [g for g in groups if strong[g].any()]
    group = max(groups, key=lambda g: int(strong[g].sum()))
    while group and label_p[group[0]] < 0.15:
        group = group[1:]
    while group and label_p[group[-1]] < 0.15:
        group = group[:-1]
    start, end = _snap_to_words(text, offsets[group[0]][0], offsets[group[-1]][1])
    while (more := _ITEM_AFTER.match(text[end:])) and not _BETWEEN_LABELS.match(more.group(2)):
        end += more.end()
    while more := _ITEM_BEFORE.search(text[:start]):
        first = _first_label_word(more, probs, offsets)
        if first is None:
            break
        start = first
    items, cursor = [], start
    for piece in _LIST_SEPARATORS.split(text[start:end]):
        at = text.find(piece, cursor, end)
        cursor = at + len(piece)
        left, right = at, at + len(piece)
        while left < right and text[left] in _EDGE:
            left += 1
        while right > left and text[right - 1] in _EDGE:
            right -= 1
        if right > left:
            items.append((left, right))
    return items


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
        probs = self._probs(tokens)
        payload_span = self._payload(text, probs, offsets)
        labels, label_pieces = [], []
        for start, end in _label_items(text, probs, offsets) if len(probs) else []:
            name = text[start:end].strip(_EDGE)
            pieces = pieces_within(offsets, start, end)
            if name and pieces and name.lower() not in (l.lower() for l in labels):
                labels.append(name)
                label_pieces.append(pieces)
        types, names, unknown = [], {}, []
        for kind, a, b in _runs(probs, split=False):
            if kind != "TYP":
                continue
            run = text[slice(*_snap_to_words(text, offsets[a][0], offsets[b][1]))]
            # "people and places" names two types: a list's separators (exact) split it.
            for phrase in _TYPE_SEPARATORS.split(run):
                phrase = phrase.strip(_EDGE)
                if not set(phrase.lower().split()) - _FUNCTION_WORDS or _ANY_ENTITY.fullmatch(phrase):
                    continue
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
            pieces = pieces_within(offsets, start, end)
            instruction = (text[:start] + " " + text[end:]).strip(_EDGE + " ")
        confidence = float(probs.max(axis=1).min()) if len(probs) else 0.0
        parsed = ParsedRequest(task, payload, instruction, labels, types, names, confidence)
        return Reading(parsed, task_scores, pieces, label_pieces, unknown)

    def payload(self, text: str, tokens: np.ndarray, offsets: list[tuple[int, int]]) -> str:
        """Only the payload the request wraps ('' when the head finds none): what the router needs to tell
        a message from an instruction around a text, without reading labels and entity types."""
        span = self._payload(text, self._probs(tokens), offsets)
        return text[span[0] : span[1]] if span else ""

    def _probs(self, tokens: np.ndarray) -> np.ndarray:
        return self.span_head.predict_proba(tokens) if len(tokens) else np.zeros((0, len(SPAN_TAGS)))

    @staticmethod
    def _payload(text: str, probs: np.ndarray, offsets) -> tuple[int, int] | None:
        """The payload's character span: the predicted runs joined when only punctuation and quotes, or a
        few doubted words, lie between them; else the longest; snapped to the quotes around it, when the
        head put it inside a quoted segment."""
        runs = [(a, b) for kind, a, b in _runs(probs, split=False) if kind == "PAY"]
        if not runs:
            return None
        payload_p = probs[:, 1] + probs[:, 2]
        merged = [list(runs[0])]
        for a, b in runs[1:]:
            gap = text[offsets[merged[-1][1]][1] : offsets[a][0]]
            # A payload is one stretch of text: a word or two the head doubted inside it stays in it.
            doubted = a - merged[-1][1] <= 4 and (payload_p[merged[-1][1] + 1 : a] >= 0.2).all()
            if not gap.strip(_EDGE) or (doubted and not re.search(r"[\n:\"“”«»]", gap)):
                merged[-1][1] = b
            else:
                merged.append([a, b])
        a, b = max(merged, key=lambda r: offsets[r[1]][1] - offsets[r[0]][0])
        start, end = offsets[a][0], offsets[b][1]
        for m in _QUOTED.finditer(text):
            q_start, q_end = m.start(2), m.end(2)
            overlap = min(end, q_end) - max(start, q_start)
            # Snap only to a quote that holds most of the prediction: a short quote inside a payload
            # ("… not an "hysterical woman", you …") is part of it, not the payload.
            if overlap > 0 and overlap >= 0.5 * (end - start):
                return q_start, q_end
        while start < end and text[start] in _EDGE:
            start += 1
        while end > start and text[end - 1] in _EDGE.replace(".", "").replace("!", "").replace("?", ""):
            end -= 1
        # The head is least sure where a payload begins and ends: a lone word between a line start and
        # the payload is its first word, and the sentence's closing punctuation belongs to it.
        line_start = text.rfind("\n", 0, start) + 1
        if re.fullmatch(r"[\w'’-]+\s+", text[line_start:start]):
            start = line_start
        while end < len(text) and text[end] in ".!?…":
            end += 1
        return (start, end) if end > start else None
