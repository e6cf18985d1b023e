"""Entity decoding and patterns (no model needed)."""

from __future__ import annotations

import numpy as np

from models.entities import decode_bio, pattern_entities, word_spans

LABELS = ("B-PER", "I-PER", "B-LOC", "O")


def test_word_spans_merge_pieces():
    offsets = [(0, 4), (4, 7), (8, 10)]
    assert word_spans(offsets, [0, 0, 1]) == [(0, 0, 7), (2, 8, 10)]


def test_decode_bio_joins_i_tags_and_opens_stray_ones():
    text = "Ada Lovelace met Paris"
    spans = [(0, 0, 3), (1, 4, 12), (2, 13, 16), (3, 17, 22)]
    probs = np.array([[0.9, 0.05, 0.0, 0.05], [0.1, 0.8, 0.0, 0.1], [0, 0, 0, 1.0], [0.0, 0.7, 0.2, 0.1]])
    ents = decode_bio(text, spans, probs, LABELS)
    assert [(e.text, e.type) for e in ents] == [("Ada Lovelace", "PER"), ("Paris", "PER")]
    assert ents[0].confidence == np.float32(0.85) or abs(ents[0].confidence - 0.85) < 1e-6


def test_patterns():
    text = "Call +1 415 555 0100 or mail bob@example.com by Friday 3pm about the $1,200 invoice."
    found = {(e.type, e.text) for e in pattern_entities(text)}
    assert ("PHONE", "+1 415 555 0100") in found
    assert ("EMAIL", "bob@example.com") in found
    assert ("DATE", "Friday") in found
    assert ("TIME", "3pm") in found
    assert ("MONEY", "$1,200") in found
