"""Fitting the tier-1 calibration: temperatures, keep thresholds and Platt scaling on held-out rows.

What is fitted here is written to ``models/heads/calibration.json`` by ``tierwise train`` and applied at run
time by :mod:`models.calibration`.
"""

from __future__ import annotations

import numpy as np

from models.calibration import KEEP_ACCURACY, HeadCalibration, ScoreCalibration
from models.heads import softmax


def fit_temperature(logits: np.ndarray, gold: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of ``gold`` (grid search, then refined)."""

    def nll(t: float) -> float:
        p = softmax(logits / t)
        return float(-np.log(p[np.arange(len(gold)), gold] + 1e-12).mean())

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    best = min(grid, key=nll)
    fine = best * np.exp(np.linspace(-0.06, 0.06, 25))
    return float(min(fine, key=nll))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy, over equal-width bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    return float(ece)


def fit_threshold(confidence: np.ndarray, correct: np.ndarray, target: float = KEEP_ACCURACY,
                  min_kept: int = 20) -> float:
    """The lowest threshold at which the answers kept (confidence ≥ threshold) are ``target`` accurate.

    The kept set at a threshold is the top of the rows by confidence, so this is the largest such top
    (at least ``min_kept`` rows) whose accuracy reaches the target; a head that never reaches it gets a
    threshold above 1 (it never keeps an answer).
    """
    order = np.argsort(-confidence, kind="stable")
    conf, ok = confidence[order], correct[order].astype(float)
    running = np.cumsum(ok) / np.arange(1, len(ok) + 1)
    # A threshold keeps every row tied with the last one kept, so only the end of a run of ties counts.
    ends = np.r_[conf[1:] != conf[:-1], True]
    good = np.flatnonzero((running >= target) & ends & (np.arange(len(conf)) >= min_kept - 1))
    return float(conf[good[-1]]) if len(good) else 1.01


def calibrate_head(logits: np.ndarray, gold: np.ndarray, target: float = KEEP_ACCURACY) -> HeadCalibration:
    """Temperature, keep threshold and their held-out figures for one head."""
    temperature = fit_temperature(logits, gold)
    p = softmax(logits / temperature)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == gold
    return summarise(confidence, correct, temperature, target)


def summarise(confidence: np.ndarray, correct: np.ndarray, temperature: float = 1.0,
              target: float = KEEP_ACCURACY) -> HeadCalibration:
    """A :class:`HeadCalibration` from per-row confidences and correctness (any kind of answer)."""
    threshold = fit_threshold(confidence, correct, target)
    kept = confidence >= threshold
    return HeadCalibration(
        temperature=round(temperature, 4), threshold=round(threshold, 4),
        kept_accuracy=round(float(correct[kept].mean()), 4) if kept.any() else None,
        kept_share=round(float(kept.mean()), 4), ece=round(expected_calibration_error(confidence, correct), 4),
        rows=int(len(correct)))


def fit_platt(scores: np.ndarray, correct: np.ndarray, iterations: int = 50) -> ScoreCalibration:
    """Platt scaling: the logistic curve of ``correct`` on ``scores`` that maximises the likelihood
    (Newton's method on two parameters; a small ridge keeps it finite on separable data)."""
    x = np.stack([np.asarray(scores, float), np.ones(len(scores))], axis=1)
    y = np.asarray(correct, float)
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        gradient = x.T @ (p - y) + 1e-3 * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-3 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    p = 1.0 / (1.0 + np.exp(-x @ w))
    return ScoreCalibration(float(w[0]), float(w[1]), round(expected_calibration_error(p, y.astype(bool)), 4),
                            len(y))
