"""Quality heads: for each benchmark model, the calibrated probability that it answers a prompt as well as
the reference frontier model (GPT-4-1106), read off the router's own embedding.

This is RouteLLM's "strong win rate" turned around and generalised to N models: a head per model predicts
that the model does not fall short of the reference on this prompt. The serving policy sends a generative
request to the cheapest tier-2 model whose predicted quality clears ``router.quality.threshold`` and to
tier 3 otherwise. A tier-2 model is tied to the benchmark model it stands in for (``quality_as``).

Trained by :mod:`models.training.quality` (``tierwise train --only quality``); this module is what the
gateway loads: the heads, the structural features they read and the model names they go by.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


REFERENCE = "gpt-4-1106-preview"
QUALITY_FILE = "quality.npz"
# One name per model across the sources (they spell the same checkpoints differently).
ALIASES = {
    "mixtral-8x7b-chat": "mixtral-8x7b-instruct", "mixtral-8x7b-instruct-v0.1": "mixtral-8x7b-instruct",
    "mistral-7b-chat": "mistral-7b-instruct", "mistral-7b-instruct-v0.1": "mistral-7b-instruct",
    "claude-instant-v1": "claude-instant-1", "claude-v1": "claude-1", "claude-v2": "claude-2",
    "code-llama-instruct-34b-chat": "codellama-34b-instruct", "wizardlm-13b-v1.2": "wizardlm-13b",
    "yi-34b-chat": "yi-34b-chat", "starling-lm-7b-alpha": "starling-7b", "vicuna-33b-v1.3": "vicuna-33b",
    "palm-2-chat-bison-001": "palm-2-chat-bison",
}
STRUCTURAL = ("log_chars", "lines", "code", "digits", "math", "questions")
_CODE = re.compile(r"```|\bdef |\bclass |\breturn\b|[{};]\s*$|#include|\bfunction\b|=>|\bSELECT\b", re.M)
_MATH = re.compile(r"[=+*/^]|\\frac|\bsolve\b|\bprove\b|\bequation\b|\bprobability\b", re.I)


def canonical(model: str) -> str:
    """The one name a model goes by here: the last path part, lower case, aliases joined."""
    name = model.rsplit("/", 1)[-1].lower()
    return ALIASES.get(name, name)


def structural_features(texts: list[str]) -> np.ndarray:
    """Cheap features the embedding reads badly: length, line count, code, digits, math, questions."""
    rows = []
    for t in texts:
        chars = max(len(t), 1)
        rows.append([np.log1p(len(t)) / 8, min(t.count("\n"), 50) / 50, min(len(_CODE.findall(t)), 10) / 10,
                     sum(c.isdigit() for c in t) / chars * 10, min(len(_MATH.findall(t)), 20) / 20,
                     min(t.count("?"), 5) / 5])
    return np.asarray(rows, dtype=np.float32).reshape(len(texts), len(STRUCTURAL))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def suffices_features(quality: np.ndarray, p_reasoning: np.ndarray) -> np.ndarray:
    """The stacker's inputs: the tier-2 model's predicted quality and the share of reasoning in the task
    head's generative classes, both as logits, and their interaction."""
    q, r = _logit(quality), _logit(p_reasoning)
    return np.stack([q, r, q * np.asarray(p_reasoning, np.float64)], axis=-1)


@dataclass
class QualityHeads:
    """Logistic heads over [embedding, structural features], one per model, with Platt scaling; and the
    stacker that turns a tier-2 model's predicted quality and the reasoning signal into the calibrated
    probability that tier 2 answers well enough (``suffices``: three weights and a bias)."""

    models: list[str]
    weight: np.ndarray
    bias: np.ndarray
    slope: np.ndarray
    intercept: np.ndarray
    suffices: np.ndarray | None = None

    def tier2_suffices(self, quality: np.ndarray, p_reasoning: np.ndarray) -> np.ndarray:
        """Calibrated P(tier 2 answers well enough) for predicted qualities and reasoning shares (the
        quality itself when no stacker was fitted)."""
        if self.suffices is None:
            return np.asarray(quality, np.float64)
        z = suffices_features(quality, p_reasoning) @ self.suffices[:3] + self.suffices[3]
        return 1.0 / (1.0 + np.exp(-z))

    def predict(self, pooled: np.ndarray, texts: list[str]) -> np.ndarray:
        """Calibrated P(answers as well as the reference), shape (len(texts), len(models))."""
        x = np.concatenate([np.asarray(pooled, np.float32), structural_features(texts)], axis=1)
        logit = x @ self.weight.T + self.bias
        return 1.0 / (1.0 + np.exp(-(self.slope * logit + self.intercept)))

    def select(self, models: tuple[str, ...]) -> "QualityHeads":
        """Only the heads of ``models`` (in that order): what a router predicts per request."""
        rows = [self.index(m) for m in models]
        return QualityHeads([self.models[i] for i in rows], self.weight[rows], self.bias[rows], self.slope[rows],
                            self.intercept[rows], self.suffices)

    def index(self, model: str) -> int:
        """Column of ``model`` in :meth:`predict`; a clear error for a model without a head."""
        name = canonical(model)
        if name not in self.models:
            raise KeyError(f"no quality head for {model!r}; heads exist for: {', '.join(self.models)}")
        return self.models.index(name)

    def save(self, path: Path) -> None:
        """Write the heads as one ``.npz``."""
        extra = {} if self.suffices is None else {"suffices": self.suffices.astype(np.float64)}
        np.savez(path, models=np.array(self.models), weight=self.weight.astype(np.float32),
                 bias=self.bias.astype(np.float32), slope=self.slope.astype(np.float32),
                 intercept=self.intercept.astype(np.float32), **extra)

    @classmethod
    def load(cls, path: Path) -> "QualityHeads":
        """Read heads written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            return cls([str(m) for m in data["models"]], data["weight"], data["bias"], data["slope"], data["intercept"],
                       data["suffices"] if "suffices" in data else None)


