"""Calibrated confidences and keep thresholds for the tier-1 heads.

Each head's probabilities are temperature-scaled (one temperature per head, fitted by likelihood on
held-out rows) so that a confidence of 0.9 is right about 90% of the time; then a keep threshold is
fitted so that the answers tier 1 keeps, on held-out rows, are at least ``target`` accurate. Both live in
``models/heads/calibration.json``, written by ``tierwise train`` and read at start-up.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models.heads import softmax

KEEP_ACCURACY = 0.97
# Heads with a temperature and a keep threshold (``tier1.min_confidence`` may override the threshold).
CALIBRATED_HEADS = ("sentiment2", "sentiment3", "banking77", "clinc150", "task", "entities", "labels")


@dataclass(frozen=True)
class HeadCalibration:
    """One head's temperature and keep threshold, with the held-out figures behind them."""

    temperature: float = 1.0
    threshold: float = 0.5
    kept_accuracy: float | None = None
    kept_share: float | None = None
    ece: float | None = None
    rows: int = 0


@dataclass(frozen=True)
class ScoreCalibration:
    """Platt scaling of a raw score (a FAQ cosine similarity) into the probability that the answer it
    picks is right, so that it can be compared with the heads' calibrated probabilities."""

    slope: float
    intercept: float
    ece: float | None = None
    rows: int = 0

    def prob(self, score: float) -> float:
        """P(right | score)."""
        return float(1.0 / (1.0 + np.exp(-(self.slope * score + self.intercept))))


@dataclass
class Calibration:
    """Every head's :class:`HeadCalibration` (a head without one keeps temperature 1 and threshold 0.5)
    and the :class:`ScoreCalibration` of raw scores (a score without one is used as it is)."""

    heads: dict[str, HeadCalibration]
    scores: dict[str, ScoreCalibration] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        """Read ``calibration.json``; a missing file means uncalibrated defaults."""
        if not Path(path).exists():
            return cls({})
        data = json.loads(Path(path).read_text())
        return cls({name: HeadCalibration(**values) for name, values in data.get("heads", {}).items()},
                   {name: ScoreCalibration(**values) for name, values in data.get("scores", {}).items()})

    def save(self, path: Path) -> None:
        """Write ``calibration.json``."""
        payload = {"keep_accuracy_target": KEEP_ACCURACY,
                   "heads": {name: asdict(h) for name, h in sorted(self.heads.items())},
                   "scores": {name: asdict(c) for name, c in sorted(self.scores.items())}}
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")

    def score_prob(self, name: str, score: float) -> float:
        """The calibrated probability behind a raw score (the score itself when uncalibrated)."""
        calibration = self.scores.get(name)
        return calibration.prob(score) if calibration else float(score)

    def get(self, head: str) -> HeadCalibration:
        """The head's calibration (defaults when it has none)."""
        return self.heads.get(head, HeadCalibration())

    def probs(self, head: str, logits: np.ndarray) -> np.ndarray:
        """Temperature-scaled probabilities."""
        return softmax(logits / self.get(head).temperature)












