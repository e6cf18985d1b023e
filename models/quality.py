"""Quality heads: for each benchmark model, the calibrated probability that it answers a prompt as well as
the reference frontier model (GPT-4-1106), read off the router's own embedding.

This is RouteLLM's "strong win rate" turned around and generalised to N models: a head per model predicts
that the model does not fall short of the reference on this prompt. The serving policy sends a generative
request to the cheapest tier-2 model whose predicted quality clears ``router.quality.threshold`` and to
tier 3 otherwise. A tier-2 model is tied to the benchmark model it stands in for (``quality_as``).

Labels, from the shared data sets (``QUALITY_SOURCES``):

- RouteLLM MMLU and GSM8K (correctness of GPT-4-1106 and Mixtral-8x7B), MT-Bench (GPT-4 judge scores,
  first-turn prompt, mean of both turns), RouterBench's 11 models (0/1 scores), and Arena-Bench v1's 16
  models (GPT-4 judge scores 1-10 against a reference answer): "answers well" means a score at least the
  reference model's on the same prompt.
- RouterDC's 7 open 7-8B models (score 0-1, the share of sampled answers that were right), which have no
  reference model beside them: "answers well" means right (score ≥ 0.5), i.e. as good as a reference
  that is right. Chinese sets (CMMLU, C-Eval) are left out: the encoder reads English.

Rows with the same normalised prompt are merged (their labels joined); near duplicates and templated copies
stay on one side of the train/calibration/test split (``models.router_data.group_split``), and the leak
check is part of the model card. Each head is a logistic regression on the embedding plus a few structural
features, Platt-scaled on the calibration split, and scored (AUC, Brier, ECE) on the test split.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models import datasets as ds
from models.calibration import expected_calibration_error, fit_platt
from models.router_data import Row, group_split, leak_check, normalise

log = logging.getLogger(__name__)

REFERENCE = "gpt-4-1106-preview"
SEED = 0
# Shares of merged prompts held out (whole duplicate clusters): Platt scaling, then the model card's figures.
CALIB_SHARE, TEST_SHARE = 0.15, 0.15
# A head needs this many labelled prompts: Arena-Bench alone (~300 prompts) gives heads whose held-out
# AUC swings by 0.2 between seeds.
MIN_ROWS = 1000
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
    from models.router_eval import WEAK, routellm_benchmark

    b = routellm_benchmark(name, drop_contaminated=False)
    return [QualityRow(text, source, _as_good({REFERENCE: strong, WEAK: weak}))
            for text, strong, weak in zip(b.prompts, b.strong, b.weak)]


def _routellm_rows() -> list[QualityRow]:
    return _pair_rows("mmlu", "routellm_mmlu") + _pair_rows("gsm8k", "routellm_gsm8k")


def _mt_bench_rows() -> list[QualityRow]:
    # First-turn prompt, both turns' mean judge score.
    return _pair_rows("mt_bench", "mt_bench")


def _routerbench_rows() -> list[QualityRow]:
    from models.router_eval import ROUTERBENCH_SUBSETS, prompt_text, routerbench_models, strip_shared_preamble

    rows = []
    for subset, file_name in ROUTERBENCH_SUBSETS.items():
        table = []
        for split in ("train", "test"):
            with open(ds.datasets_dir() / "routerdc" / f"routerbench_zs__{file_name}_{split}.csv", newline="") as f:
                table += list(csv.DictReader(f))
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
