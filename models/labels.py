"""Class names shared by training and serving, and the mapping of a request's own sentiment words onto
the sentiment heads' classes."""

from __future__ import annotations

import re

# What a request asks for (the router's task head); tier 1 answers the first four, FAQ by retrieval.
TASKS = ("sentiment", "classify", "entities", "intent", "faq", "generation", "reasoning")
TIER1_TASKS = frozenset({"sentiment", "classify", "entities", "intent", "faq"})
SENTIMENT2 = ("negative", "positive")
SENTIMENT3 = ("negative", "neutral", "positive")


def bio_tags(types: tuple[str, ...]) -> tuple[str, ...]:
    """``O`` then ``B-X``, ``I-X`` for each type."""
    return ("O", *(f"{p}-{t}" for t in types for p in ("B", "I")))


CONLL_TYPES = ("PER", "ORG", "LOC", "MISC")
WNUT_TYPES = ("person", "location", "corporation", "group", "product", "creative-work")
CONLL_TAGS = bio_tags(CONLL_TYPES)
WNUT_TAGS = bio_tags(WNUT_TYPES)
# WNUT-17's types on the canonical scale; a served answer names PRODUCT and WORK from the WNUT head.
WNUT_CANONICAL = {"person": "PER", "location": "LOC", "corporation": "ORG", "group": "ORG", "product": "PRODUCT",
                  "creative-work": "WORK"}
# The reading head's tags: the payload, each label the request offers, each entity type it names.
SPAN_KINDS = ("PAY", "LAB", "TYP")
SPAN_TAGS = bio_tags(SPAN_KINDS)

# Words people use for the sentiment classes; a request naming labels outside these is a label-set
# classification (the label scorer), not sentiment.
_SENTIMENT_WORDS = {
    "positive": ("positive", "pos", "good", "favorable", "favourable", "happy", "satisfied", "thumbs up", "like",
                 "liked", "great", "praise", "approve", "approval", "optimistic", "upbeat"),
    "negative": ("negative", "neg", "bad", "unfavorable", "unfavourable", "unhappy", "dissatisfied", "thumbs down",
                 "dislike", "disliked", "poor", "criticism", "disapprove", "disapproval", "pessimistic"),
    "neutral": ("neutral", "neither", "mixed", "objective", "no opinion", "none", "indifferent", "meh"),
}
_LOOKUP = {w: c for c, words in _SENTIMENT_WORDS.items() for w in words}


def canonical_sentiment(label: str) -> str | None:
    """The sentiment class a label word means ("Thumbs up" → positive), or None for any other word."""
    key = re.sub(r"[\s_]+", " ", label.strip().strip(".'\"").lower())
    return _LOOKUP.get(key)


def sentiment_label_map(labels: list[str]) -> dict[str, str] | None:
    """The request's labels mapped onto sentiment classes, when every label is a sentiment word and no two
    mean the same class; else None (the labels are not a sentiment scale)."""
    mapped = {label: canonical_sentiment(label) for label in labels}
    classes = list(mapped.values())
    if len(labels) < 2 or None in classes or len(set(classes)) != len(classes):
        return None
    if "neutral" in classes and len(classes) == 2:
        return None
    return mapped
