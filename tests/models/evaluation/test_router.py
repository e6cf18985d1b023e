"""A smoke run of the router report on a few rows of each benchmark in the data folder, and the RouteLLM
label and protocol pieces on small cases."""

from __future__ import annotations

import json

import numpy as np

from models.evaluation.router import curve_figures, run_report, subset, weak_falls_short
from models.training.benchmarks import Benchmark, strip_shared_preamble


def test_the_label_is_the_strong_model_doing_better():
    b = Benchmark("x", ["a", "b", "c"], np.array([1.0, 1.0, 9.0]), np.array([0.0, 1.0, 9.5]), np.array(["g"] * 3))
    assert weak_falls_short(b).tolist() == [1, 0, 0]


def test_a_perfect_router_recovers_the_gap_fast():
    strong = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], float)
    weak = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], float)
    oracle = curve_figures(1 - weak, strong, weak)  # high exactly where the weak model fails
    backwards = curve_figures(weak + np.linspace(0, 0.1, 10), strong, weak)  # high where it succeeds
    assert oracle["apgr"] > 0.7 > backwards["apgr"] and oracle["cpt50"] < backwards["cpt50"]


def test_a_subset_is_reproducible():
    b = Benchmark("x", [str(i) for i in range(20)], np.arange(20.0), np.zeros(20), np.arange(20))
    assert subset(b, 5).prompts == subset(b, 5).prompts and len(subset(b, 5).prompts) == 5


def test_the_router_report_smoke_run(settings, tmp_path):
    flat = run_report(settings, tmp_path, limit=60)
    for bench in ("mt_bench", "mmlu", "gsm8k"):
        for metric in ("apgr", "cpt50", "cpt80"):
            assert isinstance(flat[f"routellm.{bench}.{metric}"], float)
    for sub in ("arc_challenge", "mbpp", "winogrande"):
        assert flat[f"routerbench.{sub}.oracle_aiq"] >= flat[f"routerbench.{sub}.zero_router_aiq"] - 1e-9
    assert 0 <= flat["task_routing.tier_accuracy"] <= 1 and 0 <= flat["task_routing.hard_to_tier1_rate"] <= 1
    assert 0 <= flat["multi_turn.follow_up_kept_rate"] <= 1 and flat["router.p50_ms"] > 0
    assert json.loads((tmp_path / "figures.json").read_text()) == flat
    assert (tmp_path / "routellm_quality_vs_strong_share.png").stat().st_size > 10_000
    assert (tmp_path / "routerbench_quality_vs_cost.png").stat().st_size > 10_000
    assert "RouteLLM's best APGR" in (tmp_path / "report.md").read_text()


def test_a_shared_few_shot_preamble_is_stripped():
    shots = "Answer with the letter.\n\nQ: 1+1? A) 2 B) 3\nA\n\n"
    texts = [shots + "Q: 2+2? A) 4 B) 5", shots + "Q: 3+3? A) 5 B) 6"]
    assert strip_shared_preamble(texts) == ["Q: 2+2? A) 4 B) 5", "Q: 3+3? A) 5 B) 6"]
    assert strip_shared_preamble(["same", "same"]) == ["same", "same"]  # never down to nothing
