"""Training the quality heads: labelled prompts from the public benchmarks, the heads, their Platt scaling,
the tier-2-suffices stacker and the model card.

Labels, from the shared data sets (``QUALITY_SOURCES``):

- RouteLLM MMLU and GSM8K (correctness of GPT-4-1106 and Mixtral-8x7B), MT-Bench (GPT-4 judge scores,
  first-turn prompt, mean of both turns), RouterBench's 11 models (0/1 scores), and Arena-Bench v1's 16
  models (GPT-4 judge scores 1-10 against a reference answer): "answers well" means a score at least the
  reference model's on the same prompt.
- RouterDC's 7 open 7-8B models (score 0-1, the share of sampled answers that were right), which have no
  reference model beside them: "answers well" means right (score >= 0.5), i.e. as good as a reference
  that is right. Chinese sets (CMMLU, C-Eval) are left out: the encoder reads English.

Rows with the same normalised prompt are merged (their labels joined); near duplicates and templated copies
stay on one side of the train/calibration/test split (:func:`models.training.dedup.group_split`), and the
leak check is part of the model card. Each head is a logistic regression on the embedding plus a few
structural features, Platt-scaled on the calibration split, and scored (AUC, Brier, ECE) on the test split.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.quality import REFERENCE, STRUCTURAL, QualityHeads, canonical, structural_features, suffices_features
from models.training import datasets as ds
from models.training.dedup import Row, group_split, leak_check, normalise
from models.training.fitting import expected_calibration_error, fit_platt

log = logging.getLogger(__name__)


SEED = 0


# Shares of merged prompts held out (whole duplicate clusters): Platt scaling, then the model card's figures.
CALIB_SHARE, TEST_SHARE = 0.15, 0.15


# A head needs this many labelled prompts: Arena-Bench alone (~300 prompts) gives heads whose held-out
# AUC swings by 0.2 between seeds.
MIN_ROWS = 1000


@dataclass
class QualityRow:
    """One prompt and, per model, whether it answers well (1.0) or not (0.0)."""

    text: str
    source: str
    labels: dict[str, float] = field(default_factory=dict)


def _as_good(scores: dict[str, float]) -> dict[str, float]:
    """Each model's label against the reference's score on the same prompt (the reference itself left out)."""
    ref = scores[REFERENCE]
    return {canonical(m): float(s >= ref) for m, s in scores.items() if m != REFERENCE}


def _pair_rows(name: str, source: str) -> list[QualityRow]:
    """A RouteLLM benchmark (GPT-4-1106 against Mixtral-8x7B), every prompt kept."""
    from models.training.benchmarks import WEAK, routellm_benchmark

    b = routellm_benchmark(name, drop_contaminated=False)
    return [QualityRow(text, source, _as_good({REFERENCE: strong, WEAK: weak}))
            for text, strong, weak in zip(b.prompts, b.strong, b.weak)]


def _routellm_rows() -> list[QualityRow]:
    return _pair_rows("mmlu", "routellm_mmlu") + _pair_rows("gsm8k", "routellm_gsm8k")


def _mt_bench_rows() -> list[QualityRow]:
    # First-turn prompt, both turns' mean judge score.
    return _pair_rows("mt_bench", "mt_bench")


def _routerbench_rows() -> list[QualityRow]:
    from models.training.benchmarks import (ROUTERBENCH_SUBSETS, prompt_text, routerbench_models, routerbench_table,
                                            strip_shared_preamble)

    rows = []
    for subset in ROUTERBENCH_SUBSETS:
        table = routerbench_table(subset, "train") + routerbench_table(subset, "test")
        models = routerbench_models(table[0])
        texts = strip_shared_preamble([prompt_text(r["prompt"]) for r in table])
        for text, r in zip(texts, table):
            scores = {m: float(r[m]) for m in models if r[m] != ""}
            if REFERENCE in scores:
                rows.append(QualityRow(text, f"routerbench_{subset}", _as_good(scores)))
    return rows


def _arena_rows() -> list[QualityRow]:
    with open(ds.datasets_dir() / "arena_bench_v1" / "arena_bench_v1_score_matrix.csv", newline="") as f:
        table = list(csv.DictReader(f))
    rows = []
    for r in table:
        scores = {c.removeprefix("score__"): float(v) for c, v in r.items() if c.startswith("score__") and v != ""}
        if REFERENCE in scores:
            rows.append(QualityRow(r["prompt"], "arena_bench_v1", _as_good(scores)))
    return rows


ROUTERDC_FILES = ("mmlu_train", "mmlu_test", "gsm8k-train", "gsm8k-test", "arc_challenge_train", "arc_challenge_test",
                  "arc_easy_train", "arc_easy_test", "MATH_prealgebra", "humaneval_train", "humaneval_test", "mbpp",
                  "javascript")


def _routerdc_rows() -> list[QualityRow]:
    rows = []
    for name in ROUTERDC_FILES:
        for item in json.loads((ds.datasets_dir() / "routerdc" / f"split2_model7__{name}.json").read_text()):
            labels = {canonical(m): float(s >= 0.5) for m, s in item["scores"].items()}
            rows.append(QualityRow(item["question"], f"routerdc_{name.split('_')[0].split('-')[0]}", labels))
    return rows


QUALITY_SOURCES = {"routellm": _routellm_rows, "mt_bench": _mt_bench_rows, "routerbench": _routerbench_rows,
                   "arena_bench_v1": _arena_rows, "routerdc": _routerdc_rows}


def load_quality_rows(sources: tuple[str, ...] = tuple(QUALITY_SOURCES)) -> list[QualityRow]:
    """Every labelled prompt, merged by normalised text (a prompt that two sources score gets both labels;
    where they disagree on a model, the first source read wins)."""
    merged: dict[str, QualityRow] = {}
    for name in sources:
        for row in QUALITY_SOURCES[name]():
            if not row.text.strip():
                continue
            key = normalise(row.text)
            if key in merged:
                for model, label in row.labels.items():
                    merged[key].labels.setdefault(model, label)
            else:
                merged[key] = row
    return list(merged.values())


def _auc(p: np.ndarray, y: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(y, p)), 4) if 0 < y.mean() < 1 else None


def quality_splits(rows: list[QualityRow], seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the train, calibration and test rows: whole duplicate clusters on one side, seeded."""
    split_rows = [Row(r.text, r.source) for r in rows]
    rest, test = group_split(split_rows, TEST_SHARE, seed)
    train_k, calib_k = group_split([split_rows[i] for i in rest], CALIB_SHARE / (1 - TEST_SHARE), seed + 1)
    return np.array([rest[k] for k in train_k]), np.array([rest[k] for k in calib_k]), np.array(test)


def train_quality_heads(rows: list[QualityRow], pooled: np.ndarray, seed: int = SEED,
                        splits: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[QualityHeads, dict]:
    """Fit a head per model with at least ``MIN_ROWS`` labels on the train split, Platt-scale it on the
    calibration split and score it on the test split (``splits``: :func:`quality_splits`, computed when
    not given); returns the heads and the model card's figures."""
    from sklearn.linear_model import LogisticRegression

    train, calib, test = splits if splits is not None else quality_splits(rows, seed)
    x = np.concatenate([pooled.astype(np.float32), structural_features([r.text for r in rows])], axis=1)
    counts: dict[str, int] = {}
    for r in rows:
        for m in r.labels:
            counts[m] = counts.get(m, 0) + 1
    models = sorted(m for m, n in counts.items() if n >= MIN_ROWS)
    weights, biases, slopes, intercepts, card = [], [], [], [], {}
    for model in models:
        y = np.array([r.labels.get(model, np.nan) for r in rows])
        has = ~np.isnan(y)
        tr, ca, te = (idx[has[idx]] for idx in (train, calib, test))
        head = LogisticRegression(C=1.0, max_iter=3000).fit(x[tr], y[tr].astype(int))
        logit = lambda idx: x[idx] @ head.coef_[0] + head.intercept_[0]  # noqa: E731
        platt = fit_platt(logit(ca), y[ca])
        p_test = 1.0 / (1.0 + np.exp(-(platt.slope * logit(te) + platt.intercept)))
        weights.append(head.coef_[0])
        biases.append(head.intercept_[0])
        slopes.append(platt.slope)
        intercepts.append(platt.intercept)
        card[model] = {"rows": {"train": int(len(tr)), "calib": int(len(ca)), "test": int(len(te))},
                       "answers_well_rate": round(float(y[has].mean()), 4),
                       "sources": sorted({rows[i].source for i in np.flatnonzero(has)}),
                       "test": {"auc": _auc(p_test, y[te]), "brier": round(float(np.mean((p_test - y[te]) ** 2)), 4),
                                "ece": round(expected_calibration_error(p_test, y[te].astype(bool)), 4)}}
        log.info("quality head %s: %d train rows, test AUC %s, ECE %.3f", model, len(tr), card[model]["test"]["auc"],
                 card[model]["test"]["ece"])
    heads = QualityHeads(models, np.array(weights, np.float32), np.array(biases, np.float32),
                         np.array(slopes, np.float32), np.array(intercepts, np.float32))
    leak = leak_check([rows[i].text for i in train], [rows[i].text for i in test]).as_dict()
    report = {"reference": REFERENCE, "seed": seed, "features": ["embedding(384)", *STRUCTURAL],
              "rows": {"merged_prompts": len(rows), "train": int(len(train)), "calib": int(len(calib)),
                       "test": int(len(test))},
              "sources": sorted({r.source for r in rows}), "leak_check_train_vs_test": leak, "heads": card}
    return heads, report


def fit_tier2_suffices(quality: np.ndarray, p_reasoning: np.ndarray, label: np.ndarray,
                       source: np.ndarray) -> np.ndarray:
    """The stacker's weights (three and a bias), by logistic regression with each source weighted equally.

    Two kinds of rows teach it: benchmark prompts, labelled by whether the tier-2 stand-in answered as well
    as the reference (measured quality), and generative requests of the routing set, labelled by their
    task (a generation request is tier 2's, a reasoning request tier 3's)."""
    from sklearn.linear_model import LogisticRegression

    weights = np.array([1.0 / np.sum(source == s) for s in source])
    model = LogisticRegression(C=1.0, max_iter=1000).fit(suffices_features(quality, p_reasoning), label.astype(int),
                                                        sample_weight=weights * len(source) / weights.sum())
    return np.concatenate([model.coef_[0], model.intercept_]).astype(np.float64)


def suffices_figures(p: np.ndarray, label: np.ndarray) -> dict:
    """AUC, Brier and ECE of the stacker's probabilities on held-out rows."""
    label = np.asarray(label, float)
    return {"rows": int(len(label)), "auc": _auc(p, label), "brier": round(float(np.mean((p - label) ** 2)), 4),
            "ece": round(expected_calibration_error(p, label.astype(bool)), 4)}


def write_model_card(path: Path, report: dict) -> None:
    """The quality heads' model card: data, protocol and held-out figures, from :func:`train_quality_heads`."""
    rows = report["rows"]
    lines = ["# Quality heads: model card", "",
             "Written by `tierwise train` (step `quality`, `models/quality.py`); do not edit by hand.", "",
             "## What they predict", "",
             f"For each model, the calibrated probability that it answers a prompt as well as the reference "
             f"({report['reference']}). The serving policy sends a generative request to the cheapest tier-2 model "
             "whose probability (through the benchmark model it stands in for, `quality_as`) clears "
             "`router.quality.threshold`, else to tier 3.", "",
             "## Data", "",
             f"{rows['merged_prompts']:,} prompts after merging identical ones across sources: "
             f"{', '.join(report['sources'])}. Labels: a score at least the reference's on the same prompt "
             "(RouteLLM MMLU/GSM8K correctness, MT-Bench and Arena-Bench v1 GPT-4 judge scores, RouterBench 0/1 "
             "scores); for RouterDC's 7 open models, which have no reference beside them, a right answer "
             "(score ≥ 0.5).", "",
             "## Protocol", "",
             f"Seeded split by duplicate cluster (exact and near duplicates, templated copies on one side): "
             f"{rows['train']:,} train, {rows['calib']:,} calibration (Platt scaling), {rows['test']:,} test. "
             f"Features: {', '.join(report['features'])}. Logistic regression per model (C=1), seed "
             f"{report['seed']}. Leak check, train against test: {report['leak_check_train_vs_test']}.", "",
             "## Held-out figures (test split)", "",
             "| model | train rows | test rows | answers well | AUC | Brier | ECE | sources |",
             "|---|---|---|---|---|---|---|---|"]
    for model, h in report["heads"].items():
        t = h["test"]
        lines.append(f"| {model} | {h['rows']['train']:,} | {h['rows']['test']:,} | {h['answers_well_rate']:.3f} | "
                     f"{t['auc'] if t['auc'] is not None else '–'} | {t['brier']:.3f} | {t['ece']:.3f} | "
                     f"{', '.join(h['sources'])} |")
    stack = report.get("tier2_suffices")
    if stack:
        lines += ["", "## Tier 2 suffices: the policy's probability", "",
                  "The policy's threshold is on one calibrated probability: that tier 2 answers well enough. A "
                  "logistic stacker makes it from the tier-2 stand-in's predicted quality and the task head's "
                  "share of reasoning among the generative classes (both as logits, and their interaction), fitted "
                  f"on the calibration rows of both kinds with each kind weighted equally: benchmark prompts labelled "
                  f"by measured quality ({stack['stand_in']} as good as the reference) and generative requests of the "
                  "routing set labelled by task (generation: tier 2; reasoning: tier 3). Weights "
                  f"{stack['weights']}. Held out (benchmark test split; routing test split):", "",
                  "| rows | count | AUC | Brier | ECE |", "|---|---|---|---|---|"]
        for name, f in stack["test"].items():
            lines.append(f"| {name} | {f['rows']:,} | {f['auc']} | {f['brier']:.3f} | {f['ece']:.3f} |")
    lines += ["", "## Limits", "",
              "The labels come from benchmark prompts (multiple choice, math, code, chat questions); traffic unlike "
              "them gets the heads' extrapolation. A deployed tier-2 model is mapped to the benchmark model closest "
              "to it in published scores, which is an approximation: refit the heads on graded answers of your own "
              "models when you have them. The stacker is calibrated on the two kinds of rows together: the same "
              "MMLU-like question is labelled \"tier 2 suffices\" by measured quality (Mixtral is as good as GPT-4 on "
              "80% of benchmark prompts) and \"tier 3\" by the routing set's task, so on either kind alone its "
              "probabilities are off by the ECE above; `tierwise calibrate` sets the threshold on the traffic "
              "it will see, which is what makes the tier mix land.", ""]
    path.write_text("\n".join(lines))
