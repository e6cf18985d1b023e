"""The replay's workload (mix, shares, leak check) and its figures (grading by recordings, quality retained,
cost cut, the ledger's check), on recordings and outcomes made here."""

from __future__ import annotations

import pytest

from models.evaluation.replay.recordings import Recording, Recordings
from models.evaluation.replay.report import figures, render
from models.evaluation.replay.run import Outcome
from models.evaluation.replay.workload import Leaks, Mix, ReplayRow, build_workload

SCORES = {"gpt-4-1106-preview": 1.0, "mixtral-8x7b-instruct": 0.0, "mistral-7b-instruct": 1.0}


def recording(i: int, source: str = "routellm_gsm8k") -> Recording:
    return Recording(f"Question {i}: how many apples?", source, {m: f"answer {i} of {m}" for m in SCORES},
                     dict(SCORES))


def test_a_mix_names_known_slices_with_positive_shares(tmp_path):
    path = tmp_path / "mix.yaml"
    path.write_text("slices: {gsm8k: 3, mbpp: 1}\n")
    assert Mix.load(path).shares() == {"gsm8k": 0.75, "mbpp": 0.25}
    path.write_text("slices: {gsm8k: 1, chit_chat: 1}\n")
    with pytest.raises(ValueError, match=f"{path}: slices: .*unknown slices chit_chat"):
        Mix.load(path)
    path.write_text("slices: {gsm8k: 0}\n")
    with pytest.raises(ValueError, match="every share must be positive"):
        Mix.load(path)


def test_the_workload_follows_the_shares_without_repeats_while_rows_last():
    recordings = Recordings([recording(i) for i in range(50)] + [recording(100 + i, "routerbench_mbpp")
                                                                 for i in range(5)])
    rows = build_workload(Mix(slices={"gsm8k": 0.8, "mbpp": 0.2}), recordings, 40, seed=1)
    by_slice = {name: [r for r in rows if r.slice == name] for name in ("gsm8k", "mbpp")}
    assert len(by_slice["gsm8k"]) == 32 and len(by_slice["mbpp"]) == 8
    assert len({r.prompt for r in by_slice["gsm8k"]}) == 32
    assert len({r.prompt for r in by_slice["mbpp"]}) == 5  # five recordings, drawn again once used up
    assert rows == build_workload(Mix(slices={"gsm8k": 0.8, "mbpp": 0.2}), recordings, 40, seed=1)
    with pytest.raises(ValueError, match="slice winogrande: no recordings"):
        build_workload(Mix(slices={"winogrande": 1}), recordings, 10)


def test_a_prompt_a_model_learned_from_is_caught(monkeypatch):
    monkeypatch.setattr("models.evaluation.replay.workload._routerbench_training_texts", dict)
    leaks = Leaks({"question 3 how many apples"})
    assert "Question 3: how many apples?" in leaks and "Question 4: how many apples?" not in leaks
    held = leaks.held_out(Recordings([recording(i) for i in range(5)]))
    assert len(held) == 4


def outcome(i: int, tier: int, model: str, cost: float, baseline: float, exact: bool = True,
            status: int = 200) -> Outcome:
    rec = recording(i)
    content = rec.answers.get(model, "positive") if exact else "something else"
    info = {"tier": tier, "model": model, "cost_usd": cost, "baseline_cost_usd": baseline,
            "escalated_from": 2 if tier == 3 and i % 2 else None}
    return Outcome(ReplayRow(f"gsm8k-{i}", "gsm8k", rec.prompt, rec), False, status, 0.1 * (i + 1), content,
                   info if status == 200 else None)


def test_answers_are_graded_by_the_recording_of_the_model_that_answered():
    assert outcome(1, 2, "mistral-7b-instruct", 0, 0).score() == 1.0
    assert outcome(1, 2, "mixtral-8x7b-instruct", 0, 0).score() == 0.0
    assert outcome(1, 3, "gpt-4-1106-preview", 0, 0, exact=False).score() == 0.0
    assert outcome(1, 1, "tierwise-tier1", 0, 0).score() == 0.0
    assert outcome(1, 2, "mistral-7b-instruct", 0, 0, status=503).score() == 0.0


def test_figures_retain_quality_over_all_frontier_and_check_the_ledger():
    outcomes = [outcome(0, 2, "mistral-7b-instruct", 0.001, 0.01), outcome(1, 3, "gpt-4-1106-preview", 0.01, 0.01),
                outcome(2, 2, "mixtral-8x7b-instruct", 0.002, 0.01), outcome(3, 2, "mistral-7b-instruct", 0, 0,
                                                                             status=502)]
    usage = {"total": {"cost_usd": 0.013, "baseline_cost_usd": 0.03, "requests": 3}}
    f = figures(outcomes, usage)
    assert f["overall"]["quality_retained"] == 0.5  # 2 right of the 4 that all-frontier got right
    assert f["overall"]["cost_cut"] == round(1 - 0.013 / 0.03, 4)
    assert f["overall"]["tier_share"] == {1: 0.0, 2: 0.5, 3: 0.25}
    assert f["overall"]["errors_5xx"] == 1 and f["escalations"] == {"2 -> 3": 1}
    assert f["ledger"]["matches_responses"] is True
    wrong = figures(outcomes, {"total": {"cost_usd": 0.02, "baseline_cost_usd": 0.03, "requests": 3}})
    assert wrong["ledger"]["matches_responses"] is False
    text = render(f, {"mix": "m.yaml", "measured_at": "now", "command": "tierwise replay", "url": "u",
                      "requests": 4, "held_out": 4, "rate": 1, "stream_share": 0.0})
    assert "| overall | 4 |" in text and "50.0%" in text
