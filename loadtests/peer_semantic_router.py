"""semantic-router 1.1.1 as a peer of Tierwise's router: tier accuracy and decision latency on the same rows.

Run with the peer venv's python (``make peer``), never the gateway's: semantic-router pins openai<3 and the
gateway needs openai 3. ``models/evaluation/peer.py`` drives it::

    .venv-peer/bin/python loadtests/peer_semantic_router.py INPUT.json OUTPUT.json

INPUT holds ``train`` and ``test`` rows ``[text, tier]`` or ``[text, tier, stratum]`` (the stratum, such as
the request's task, only balances the sampling) and ``encoder_dir``, a local sentence-transformers
all-MiniLM-L6-v2 folder. ``OPTIONS`` below are the sampling, selection and calibration settings.

The configuration follows semantic-router's own documentation for 1.x, so the peer is the router a careful
user of it would build:

* ``IndexedRouter`` (1.x's replacement for 0.x's ``SemanticRouter``/``RouteLayer``; ``HybridRouter`` became
  ``IndexedRouter(sparse_encoder=...)``) on its default in-memory ``LocalIndex``, one ``Route`` per tier
  whose utterances are training rows, balanced across strata;
* its ``HuggingFaceEncoder`` on the local MiniLM folder, with the 256-token limit the model was trained
  with (sentence-transformers' ``max_seq_length``; the tokenizer alone would allow 512);
* ``top_k`` and ``aggregation``, the two knobs that decide how nearest utterances vote, chosen with the
  router's own ``evaluate`` on held-out training rows (1.x defaults: 5 and "mean");
* ``fit`` on those held-out rows, which in 1.x calibrates scores into the probability that the top route
  is right (it replaced 0.x's per-route threshold search), then ``confidence_threshold`` = 0.5 as the
  README sets it: act only when more likely right than wrong. Below that the router returns no route.

A test row without a route counts as wrong (``tier_accuracy``) and as unrouted; ``tier_accuracy_none_as_tier2``
sends those to tier 2 instead, and ``tier_accuracy_top_route`` takes the best route whatever its confidence
(what 1.x does with no threshold set). Latency: one torch thread, after warm-up, around the router call alone
(``router(text)``, which includes the hop to semantic-router's background event loop that every sync call makes).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import semantic_router  # noqa: E402
from semantic_router import IndexedRouter, Route  # noqa: E402
from semantic_router.encoders import DenseEncoder, HuggingFaceEncoder  # noqa: E402

OPTIONS = {
    "seed": 0,
    "utterances_per_tier": 300,
    # Held-out training rows for evaluate/fit; at most a third of a tier's rows, so tiny inputs still
    # keep most rows as utterances.
    "fit_per_tier": 200,
    "confidence_threshold": 0.5,
    "calibration": "platt",
    "top_k_grid": [5, 10, 25],
    "aggregation_grid": ["mean", "max", "sum"],
    "max_seq_length": 256,
    "warmup_queries": 20,
}
TIERS = (1, 2, 3)


def route_name(tier: int) -> str:
    return f"tier{tier}"


def split_tier_rows(rows: list[list], options: dict) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Per tier, (utterances, held-out queries): distinct texts, shuffled within each stratum and dealt
    round-robin across strata, so both parts cover every stratum evenly and never share a text (a stored
    utterance matches itself at ~1.0, which would teach the calibrator nothing about real queries)."""
    rng = random.Random(options["seed"])
    by_stratum: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    seen: set[str] = set()
    for text, tier, *stratum in rows:
        if text not in seen:
            seen.add(text)
            by_stratum[int(tier)][stratum[0] if stratum else ""].append(text)
    utterances, held_out = {}, {}
    for tier in TIERS:
        strata = [by_stratum[tier][s] for s in sorted(by_stratum[tier])]
        for texts in strata:
            rng.shuffle(texts)
        longest = max(map(len, strata), default=0)
        dealt = [texts[i] for i in range(longest) for texts in strata if i < len(texts)]
        n_fit = min(options["fit_per_tier"], len(dealt) // 3)
        held_out[tier] = dealt[:n_fit]
        utterances[tier] = dealt[n_fit:n_fit + options["utterances_per_tier"]]
    return utterances, held_out


class Memoized(DenseEncoder):
    """Embeddings computed once: the candidate routers all score the same held-out queries, and encoding
    them afresh for each would take minutes on one thread."""

    vectors: dict[str, list[float]]

    def __call__(self, docs: list[str]) -> list[list[float]]:
        return [self.vectors[d] for d in docs]


def by_length(texts: list[str]) -> list[str]:
    """Texts shortest first: the encoder pads each batch of 32 to its longest text, so batches of like
    lengths waste little (the order of a route's utterances, like that of fit's queries, means nothing)."""
    return sorted(texts, key=len)


def tier_of(name: str | None) -> int | None:
    return int(name.removeprefix("tier")) if name else None


def main(in_path: Path, out_path: Path) -> None:
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    spec = json.loads(in_path.read_text())
    if not spec["test"]:
        raise SystemExit("no test rows")
    options = OPTIONS
    encoder_dir = Path(spec["encoder_dir"])
    utterances, held_out = split_tier_rows(spec["train"], options)

    started = time.perf_counter()
    encoder = HuggingFaceEncoder(name=str(encoder_dir), device="cpu",
                                 tokenizer_kwargs={"model_max_length": options["max_seq_length"]})
    # Embeds the utterances once; the candidate routers below share the index and only read it.
    index = IndexedRouter(encoder=encoder, routes=[Route(name=route_name(t), utterances=by_length(utterances[t]))
                                                   for t in TIERS if utterances[t]]).index
    fit = sorted(((q, route_name(t)) for t in TIERS for q in held_out[t]), key=lambda pair: len(pair[0]))
    fit_x, fit_y = [q for q, _ in fit], [name for _, name in fit]
    memoized = Memoized(name=encoder.name, vectors=dict(zip(fit_x, encoder(fit_x))))
    selection = []
    for top_k in options["top_k_grid"]:
        for aggregation in options["aggregation_grid"]:
            candidate = IndexedRouter(encoder=memoized, index=index, top_k=top_k, aggregation=aggregation)
            selection.append({"top_k": top_k, "aggregation": aggregation,
                              "held_out_accuracy": round(candidate.evaluate(fit_x, fit_y), 4)})
    # Ties go to the earlier entry, so 1.x's defaults (5, "mean") win unless something beats them.
    best = max(selection, key=lambda s: s["held_out_accuracy"])
    router = IndexedRouter(encoder=encoder, index=index, top_k=best["top_k"], aggregation=best["aggregation"])
    try:
        report = router.fit(fit_x, fit_y, method=options["calibration"])
        router.confidence_threshold = options["confidence_threshold"]
        calibration = {"method": report.method, "queries": report.n, "top1_accuracy": round(report.accuracy, 4),
                       "ece": round(report.ece, 4), "params": router.calibrator.params}
    except ValueError as error:
        # fit needs both right and wrong top routes among the held-out rows, which tiny inputs may lack.
        # Raw cosine scores are no probabilities, so no threshold is set on them either.
        calibration = {"failed": str(error)}
    build_s = time.perf_counter() - started

    for text in random.Random(options["seed"]).sample(fit_x, min(options["warmup_queries"], len(fit_x))):
        router(text)
    test = spec["test"]
    predicted, top_route, latencies = [], [], []
    for text, *_ in test:
        t0 = time.perf_counter()
        choice = router(text)
        latencies.append(time.perf_counter() - t0)
        predicted.append(tier_of(choice.name))
        # the best route whatever its confidence, asked again (untimed) only where the threshold refused it
        top_route.append(predicted[-1] if choice.name else tier_of(router(text, threshold=0.0).name))
    gold = [int(row[1]) for row in test]
    accuracy = lambda tiers: round(float(np.mean([p == g for p, g in zip(tiers, gold)])), 4)  # noqa: E731
    ms = lambda q: round(float(np.percentile(latencies, q)) * 1000, 3)  # noqa: E731
    figures = {
        "version": semantic_router.__version__,
        "tier_accuracy": accuracy(predicted),
        "tier_accuracy_none_as_tier2": accuracy([2 if p is None else p for p in predicted]),
        "tier_accuracy_top_route": accuracy(top_route),
        "unrouted_rate": round(predicted.count(None) / len(predicted), 4),
        "p50_ms": ms(50),
        "p90_ms": ms(90),
        "test_rows": len(test),
        "train_rows": len(spec["train"]),
        "config": {
            "router": "IndexedRouter",
            "index": "LocalIndex",
            "encoder": {"class": "HuggingFaceEncoder", "name": str(encoder_dir), "device": "cpu",
                        "max_seq_length": options["max_seq_length"], "pooling": "mean", "normalized": True},
            "routes": {route_name(t): len(utterances[t]) for t in TIERS},
            "held_out_queries": {route_name(t): len(held_out[t]) for t in TIERS},
            "top_k": best["top_k"],
            "aggregation": best["aggregation"],
            "selection": selection,
            "calibration": calibration,
            "confidence_threshold": router.confidence_threshold,
            "torch_threads": torch.get_num_threads(),
            "build_s": round(build_s, 1),
            "options": options,
        },
        "predicted_tiers": predicted,
    }
    out_path.write_text(json.dumps(figures))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
