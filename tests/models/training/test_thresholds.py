"""Fitting the quality threshold to a tier mix or a budget, on synthetic routed requests."""

import json

import numpy as np
import pytest

from models.training.thresholds import (RoutedRequest, TierPrices, calibrate, cost_per_1k, mix, read_requests,
                                        threshold_for_budget, threshold_for_tier3_share, write_threshold)

PRICES = TierPrices(tier1=(0.0035, 0.0), tier2=(0.1, 0.4), tier3=(2.5, 10.0))


def synthetic(n: int, seed: int = 0) -> tuple[list[RoutedRequest], list[str]]:
    """A traffic mix: 30% tier-1 tasks, the rest generative with predicted qualities spread over (0, 1)."""
    rng = np.random.default_rng(seed)
    routed = [RoutedRequest(bool(rng.random() < 0.3), float(rng.beta(4, 2)), int(rng.integers(20, 400)),
                            int(rng.integers(50, 600))) for _ in range(n)]
    return routed, [f"request {seed}-{i}" for i in range(n)]


@pytest.mark.parametrize("share", [0.05, 0.2, 0.45])
def test_tier3_share_lands_on_target_on_held_out_requests(share):
    routed, texts = synthetic(6000)
    report = calibrate(routed, texts, tier3_share=share, prices=PRICES)
    assert abs(report["fit"]["mix"][3] - share) <= 0.002
    assert abs(report["held_out"]["tier3_share_error_pp"]) <= 2.0
    assert report["held_out"]["mix"][1] == pytest.approx(0.3, abs=0.03)


def test_a_tier3_share_above_the_generative_share_sends_every_generative_request_up():
    routed, _ = synthetic(1000)
    threshold = threshold_for_tier3_share(routed, 0.95)
    assert mix(routed, threshold)[2] == 0.0


def test_budget_gives_the_most_tier3_traffic_that_stays_within_it():
    routed, texts = synthetic(4000)
    all_tier2, all_tier3 = cost_per_1k(routed, 0.0, PRICES), cost_per_1k(routed, 1.01, PRICES)
    budget = all_tier2 + 0.4 * (all_tier3 - all_tier2)
    threshold = threshold_for_budget(routed, budget, PRICES)
    assert cost_per_1k(routed, threshold, PRICES) <= budget
    # One more request on tier 3 would break the budget.
    above = sorted(r.quality for r in routed if not r.tier1 and r.quality >= threshold)[0]
    assert cost_per_1k(routed, above + 1e-9, PRICES) > budget
    report = calibrate(routed, texts, budget_per_1k=budget, prices=PRICES)
    assert report["held_out"]["cost_per_1k_usd"] == pytest.approx(budget, rel=0.05)


def test_an_unreachable_budget_keeps_everything_it_can_on_tier2():
    routed, _ = synthetic(500)
    assert threshold_for_budget(routed, 0.0, PRICES) == 0.0


def test_exactly_one_target():
    routed, texts = synthetic(10)
    with pytest.raises(ValueError, match="exactly one target"):
        calibrate(routed, texts)
    with pytest.raises(ValueError, match="exactly one target"):
        calibrate(routed, texts, tier3_share=0.1, budget_per_1k=1.0, prices=PRICES)


def test_requests_file_reads_chat_messages_and_names_a_bad_line(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "Write a poem."},
                                             {"role": "assistant", "content": "Roses..."},
                                             {"role": "user", "content": "Shorter."}], "output_tokens": 40}) + "\n"
                    + json.dumps({"text": "What is 2+2?"}) + "\n")
    inputs, outputs = read_requests(path)
    assert inputs[0].text == "Shorter." and inputs[0].system == "Be brief." and "Write a poem." in inputs[0].context
    assert inputs[1].text == "What is 2+2?" and outputs == [40, 300]
    path.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"prompt": "no"}) + "\n")
    with pytest.raises(ValueError, match=r"requests.jsonl:2"):
        read_requests(path)


def test_threshold_is_written_to_the_config_keeping_its_comments(tmp_path):
    path = tmp_path / "tierwise.yaml"
    path.write_text("router:\n  context_weight: 0.3   # share of earlier turns\n  quality:\n    threshold: 0.5\n")
    write_threshold(path, 0.61234, "tier-3 share 0.2")
    text = path.read_text()
    assert "# share of earlier turns" in text and "threshold: 0.6123" in text and "fitted: tier-3 share 0.2" in text
