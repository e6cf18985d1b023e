"""The routing benchmarks' recorded outcomes: RouteLLM's GPT-4-1106 against Mixtral-8x7B (MMLU, GSM8K,
MT-Bench) and RouterBench's 11 models, read from the data folder (``TIERWISE_DATASETS``).

Training (the quality heads) and evaluation (``tierwise eval router``) read them the same way.
"""

from __future__ import annotations

import ast
import csv
import json
from dataclasses import dataclass

import numpy as np

from models.training import datasets as ds


STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"


MT_WEAK = "Mixtral-8x7B-Instruct-v0.1"


ROUTERBENCH_SUBSETS = {"arc_challenge": "arc_challenge", "mbpp": "mbpp", "winogrande": "winograde"}


@dataclass
class Benchmark:
    """Prompts with each routed model's score on them (1/0, or a judge's score), and groups for
    cross-validation."""

    name: str
    prompts: list[str]
    strong: np.ndarray
    weak: np.ndarray
    groups: np.ndarray


def _contaminated(name: str) -> set[str]:
    path = ds.datasets_dir() / "routellm_gsm8k_mmlu" / f"{name}_contaminated_prompts.jsonl"
    return {json.loads(line)["eval_prompt"] for line in path.read_text().splitlines() if line.strip()}


def _truthy(value: str) -> float:
    return 1.0 if value.strip().lower() == "true" else 0.0


def routellm_benchmark(name: str, drop_contaminated: bool = True) -> Benchmark:
    """``mmlu``, ``gsm8k`` or ``mt_bench``, by default with RouteLLM's contaminated prompts dropped (they
    overlap RouteLLM's own training data, which matters for its protocol and not for training ours)."""
    root = ds.datasets_dir()
    dropped = _contaminated(name) if drop_contaminated else set()
    if name in ("mmlu", "gsm8k"):
        file = "mmlu_responses_all_subjects.csv" if name == "mmlu" else "gsm8k_responses.csv"
        with open(root / "routellm_gsm8k_mmlu" / file, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["prompt"] not in dropped]
        groups = [r.get("subject", str(i)) for i, r in enumerate(rows)]
        return Benchmark(name, [r["prompt"] for r in rows], np.array([_truthy(r[STRONG]) for r in rows]),
                         np.array([_truthy(r[WEAK]) for r in rows]), np.array(groups))
    with open(root / "mt_bench" / "mt_bench_scores_gpt4_vs_mixtral.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_question: dict[str, dict] = {}
    for r in rows:
        q = by_question.setdefault(r["question_id"], {"turns": {}, "strong": [], "weak": []})
        q["turns"][r["turn"]] = r["prompt"]
        q["strong"].append(float(r[f"score_{STRONG}"]))
        q["weak"].append(float(r[f"score_{MT_WEAK}"]))
    kept = {qid: q for qid, q in by_question.items() if not set(q["turns"].values()) & dropped}
    # Routed on the first turn, scored on both (RouteLLM's MT-Bench protocol).
    return Benchmark(name, [q["turns"]["1"] for q in kept.values()],
                     np.array([np.mean(q["strong"]) for q in kept.values()]),
                     np.array([np.mean(q["weak"]) for q in kept.values()]), np.array(list(kept)))


def strip_shared_preamble(texts: list[str]) -> list[str]:
    """The texts less the paragraphs every one of them starts with: a benchmark's few-shot exemplars, which
    would otherwise fill the encoder's 128 tokens and hide the question the router must read."""
    paragraphs = [t.split("\n\n") for t in texts]
    shared = 0
    while all(len(p) > shared + 1 for p in paragraphs) and len({p[shared] for p in paragraphs}) == 1:
        shared += 1
    return ["\n\n".join(p[shared:]) for p in paragraphs]


def routerbench_table(subset: str, split: str) -> list[dict]:
    """The rows of one RouterBench subset's split (``arc_challenge``, ``mbpp`` or ``winogrande``; ``train`` or
    ``test``), as the CSV has them."""
    path = ds.datasets_dir() / "routerdc" / f"routerbench_zs__{ROUTERBENCH_SUBSETS[subset]}_{split}.csv"
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def routerbench_models(row: dict) -> list[str]:
    """The model columns of a RouterBench CSV row (the others are ids, the prompt, costs and responses)."""
    return [c for c in row if c and "|" not in c and c not in ("sample_id", "prompt", "eval_name",
                                                               "oracle_model_to_route_to")]


def prompt_text(raw: str) -> str:
    """RouterBench stores each prompt as the repr of a list of strings; the text is their join."""
    try:
        parts = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
    return "\n".join(parts) if isinstance(parts, list) and all(isinstance(p, str) for p in parts) else raw
