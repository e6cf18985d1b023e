"""APGR, CPT and AIQ against small cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluation.metrics import OperatingPoint, aiq, apgr, cpt, nondecreasing_hull, oracle_point, routellm_points


def points(*pairs) -> list[OperatingPoint]:
    return [OperatingPoint(0.0, share, score) for share, score in pairs]


def test_apgr_is_the_area_gained_over_the_gap():
    # Area under (0, .5) (50, 1) (100, 1): 0.375 + 0.5 = 0.875; weak 0.5, strong 1.0 -> (0.875 - 0.5) / 0.5.
    assert apgr(points((0, 0.5), (50, 1.0), (100, 1.0)), 1.0, 0.5) == pytest.approx(0.75)
    # A random router recovers the gap linearly: half the area.
    assert apgr(points((0, 0.5), (100, 1.0)), 1.0, 0.5) == pytest.approx(0.5)
    # Unordered points are sorted by share first.
    assert apgr(points((100, 1.0), (0, 0.5), (50, 1.0)), 1.0, 0.5) == pytest.approx(0.75)


def test_cpt_is_the_strong_share_that_recovers_a_share_of_the_gap():
    pts = points((0, 0.5), (50, 1.0), (100, 1.0))
    assert cpt(pts, 1.0, 0.5, 0.5) == pytest.approx(25.0)   # 0.75 reached a quarter of the way
    assert cpt(pts, 1.0, 0.5, 0.8) == pytest.approx(40.0)   # 0.9 = 0.5 + 0.8 * 0.5
    assert cpt(points((0, 0.5), (100, 1.0)), 1.0, 0.5, 0.8) == pytest.approx(80.0)


def test_routellm_points_threshold_at_the_quantiles():
    win = np.array([0.1, 0.2, 0.3, 0.4])
    strong, weak = np.array([1, 1, 1, 0]), np.array([0, 1, 0, 0])
    pts = routellm_points(win, strong, weak, bins=2)  # edges 0.1, 0.25, 0.4
    assert [p.threshold for p in pts] == pytest.approx([0.1, 0.25, 0.4])
    assert [(p.strong_share, p.score) for p in pts] == [(100.0, 0.75), (50.0, 0.5), (0.0, 0.25)]


def test_the_hull_keeps_what_mixing_reaches_and_stops_at_the_best():
    hx, hy = nondecreasing_hull(np.array([1, 2, 3]), np.array([0.5, 0.9, 0.7]))
    assert list(zip(hx, hy)) == [(1, 0.5), (2, 0.9)]
    hx, hy = nondecreasing_hull(np.array([1, 2, 3, 3]), np.array([0.2, 0.3, 0.8, 0.1]))
    assert list(zip(hx, hy)) == [(1, 0.2), (3, 0.8)]  # (2, .3) lies under the chord


def test_aiq_is_the_mean_height_of_the_hull_over_the_cost_range():
    assert aiq(np.array([1, 2, 3]), np.array([0.5, 0.9, 0.7]), (1, 3)) == pytest.approx(0.8)
    assert aiq(np.array([1, 2, 3]), np.array([0.2, 0.3, 0.8]), (1, 3)) == pytest.approx(0.5)
    # Outside its points the hull holds its first and best qualities: (0.4 * 1 + 0.5 * 1) / 2.
    assert aiq(np.array([2, 3]), np.array([0.4, 0.6]), (1, 3)) == pytest.approx(0.45)
    with pytest.raises(ValueError, match="increasing"):
        aiq(np.array([1.0]), np.array([0.5]), (2, 2))


def test_the_oracle_takes_the_cheapest_right_model():
    correct = np.array([[1, 1], [0, 1], [0, 0]])
    costs = np.array([[1.0, 5.0]] * 3)
    assert oracle_point(correct, costs) == pytest.approx((7 / 3, 2 / 3))


def test_under_and_over_routing_rates_from_a_confusion_matrix():
    from models.evaluation.router import over_rate, under_rate

    # Rows: expected tier 1-3; columns: no route, tier 1, tier 2, tier 3.
    counts = [[0, 8, 1, 1], [1, 2, 6, 1], [0, 1, 3, 6]]
    assert under_rate(counts) == (1 + 2 + 1 + 3) / 20
    assert over_rate(counts) == 2 / 10
