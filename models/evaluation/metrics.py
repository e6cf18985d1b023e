"""Quality-versus-cost metrics of routers, computed the way the published baselines compute them.

RouteLLM (two models, strong and weak; ``routellm/evals/evaluate.py``): the router scores each prompt with
the probability that the strong model wins; thresholds at the deciles of those scores give 11 operating
points (share of calls to the strong model, benchmark score). From them:

- APGR, the average performance gap recovered: the area under score-against-strong-share, less the weak
  model's area, over the strong model's area less the weak model's (trapezoids over the points' own range);
- CPT(x%), the call-performance threshold: the strong-model share at which the router recovers x% of the
  gap between the two models (linear interpolation along the points).

RouterBench (N models with costs): AIQ, the average improvement in quality, is the mean height of a
router's non-decreasing convex hull of (cost, quality) points over a cost range, so routers compare on
one number; the zero router is the hull of the single models themselves (mixing them at random), the
oracle picks the cheapest model that gets each item right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold of a two-model router: the share of calls to the strong model (0-100) and the score."""

    threshold: float
    strong_share: float
    score: float


def routellm_points(win_rates: np.ndarray, strong: np.ndarray, weak: np.ndarray, bins: int = 10) -> list[OperatingPoint]:
    """The router's operating points on a benchmark: at each of the ``bins + 1`` quantile edges of
    ``win_rates``, prompts at or above it go to the strong model (above it, at the last edge, so that the
    last point sends none). ``strong`` and ``weak`` are each model's per-prompt scores (1/0 or a judge's
    score); the point's score is their mean as routed, in the benchmark's own unit."""
    win_rates, strong, weak = (np.asarray(a, float) for a in (win_rates, strong, weak))
    edges = np.quantile(win_rates, np.linspace(0.0, 1.0, bins + 1))
    points = []
    for i, t in enumerate(edges):
        to_strong = win_rates >= t if i < len(edges) - 1 else win_rates > t
        score = np.where(to_strong, strong, weak).mean()
        points.append(OperatingPoint(float(t), float(to_strong.mean() * 100), float(score)))
    return points


def _sorted(points: list[OperatingPoint]) -> tuple[np.ndarray, np.ndarray]:
    ordered = sorted(points, key=lambda p: p.strong_share)
    return np.array([p.strong_share for p in ordered]), np.array([p.score for p in ordered])


def apgr(points: list[OperatingPoint], strong_score: float, weak_score: float) -> float:
    """Average performance gap recovered (0: no better than the weak model throughout, 1: the strong
    model's score at every share)."""
    share, score = _sorted(points)
    x = share / 100
    area = np.trapezoid(score, x)
    weak_area = np.trapezoid(np.full_like(x, weak_score), x)
    strong_area = np.trapezoid(np.full_like(x, strong_score), x)
    return float((area - weak_area) / (strong_area - weak_area))


def cpt(points: list[OperatingPoint], strong_score: float, weak_score: float, recovered: float) -> float:
    """Call-performance threshold: the strong-model share (%) at which the router reaches ``recovered``
    (e.g. 0.5) of the gap between the weak and the strong model."""
    share, score = _sorted(points)
    return float(np.interp(weak_score + recovered * (strong_score - weak_score), score, share))


def nondecreasing_hull(costs: np.ndarray, qualities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertices of the upper convex hull of (cost, quality) points, cut where quality stops rising:
    what mixing a router's configurations can reach at each budget."""
    order = np.lexsort((-np.asarray(qualities, float), np.asarray(costs, float)))
    pts = [(float(costs[i]), float(qualities[i])) for i in order]
    hull: list[tuple[float, float]] = []
    for p in pts:
        if hull and p[0] == hull[-1][0]:
            continue  # same cost: the first (highest quality) was kept
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # Drop the middle vertex when it lies on or under the chord from x1 to p.
            if (y2 - y1) * (p[0] - x1) <= (p[1] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(p)
    best = int(np.argmax([q for _, q in hull]))
    hull = hull[: best + 1]
    return np.array([c for c, _ in hull]), np.array([q for _, q in hull])


def aiq(costs: np.ndarray, qualities: np.ndarray, cost_range: tuple[float, float]) -> float:
    """Average improvement in quality: the mean of the non-decreasing hull over ``cost_range``. Below the
    router's cheapest point the hull holds that point's quality, above its best point the best quality
    (more budget never hurts: the router can stay where it is)."""
    hx, hy = nondecreasing_hull(costs, qualities)
    lo, hi = cost_range
    if hi <= lo:
        raise ValueError(f"cost range must be increasing, got {cost_range}")
    grid = np.unique(np.concatenate([[lo, hi], hx[(hx > lo) & (hx < hi)]]))
    return float(np.trapezoid(np.interp(grid, hx, hy), grid) / (hi - lo))


def oracle_point(correct: np.ndarray, costs: np.ndarray) -> tuple[float, float]:
    """The oracle's (mean cost, quality): per item, the cheapest model that gets it right (the cheapest
    model overall when none does). ``correct`` is items × models (1/0 or a score), ``costs`` the same shape."""
    correct, costs = np.asarray(correct, float), np.asarray(costs, float)
    best = correct.max(axis=1, keepdims=True)
    cost_if_best = np.where(correct == best, costs, np.inf)
    pick = cost_if_best.argmin(axis=1)
    rows = np.arange(len(correct))
    return float(costs[rows, pick].mean()), float(correct[rows, pick].mean())
