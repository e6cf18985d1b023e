"""Quality-aware routing measured on public benchmarks, by the published protocols.

Quality heads: logistic regressions on the router's own pooled MiniLM embedding (the int8 encoder that
serves), one per benchmark model, predicting that the model answers well. They are fitted only on training
rows of each protocol:

- RouteLLM (strong GPT-4-1106 against weak Mixtral-8x7B; contaminated prompts dropped as RouteLLM drops
  them): the head predicts that the weak model falls short of the strong one, which is RouteLLM's "strong
  win rate". MMLU: trained on at most 1,500 seeded rows (with any duplicates of them), tested on the rest,
  and 5-fold cross-validation grouped by subject. GSM8K: 5-fold cross-validation. MT-Bench: 5-fold
  cross-validation grouped by question, routed on the first turn and scored on both, as RouteLLM scores it. APGR
  and CPT as RouteLLM's ``evaluate.py`` computes them (``models/evaluation/metrics.py``).
- RouterBench (11 models with per-query costs; the train and test splits RouterDC ships): the few-shot
  exemplars every prompt of a subset starts with are stripped, so the encoder reads the question; one head
  per model predicts its score; the router picks, per prompt, the model with the best predicted score less
  ``λ`` times its cost, and sweeping ``λ`` gives its quality-cost points. AIQ over the single models' cost
  range, beside the zero router (the hull of the single models) and the oracle.

Unlike RouteLLM, whose routers were trained on Chatbot Arena preferences and evaluated on these sets, the
heads here train on part of each benchmark and are tested on the rest (or out of fold), so the figures
measure how well the embedding predicts model quality within a benchmark's distribution.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from models.training import datasets as ds
from models.training.benchmarks import (ROUTERBENCH_SUBSETS, Benchmark, prompt_text, routellm_benchmark,
                                         routerbench_models, routerbench_table, strip_shared_preamble)
from models.training.dedup import Row, duplicate_clusters, leak_check
from models.evaluation.metrics import aiq, apgr, cpt, nondecreasing_hull, oracle_point, routellm_points

log = logging.getLogger(__name__)

SEED = 0
MMLU_TRAIN_ROWS = 1500
FOLDS = 5
# RouteLLM's best published APGR per benchmark (matrix factorisation, trained on Arena data augmented with
# a GPT-4 judge), the figures to beat.
ROUTELLM_BEST_APGR = {"mt_bench": 0.802, "mmlu": 0.603, "gsm8k": 0.622}
# Willingness to pay (quality per USD per query): dense, so each prompt's own switch points show.
LAMBDAS = np.concatenate([[0.0], np.geomspace(1e-2, 1e5, 400)])


class Embedder:
    """Pooled embeddings of the serving int8 encoder, one text at a time as the router runs them."""

    def __init__(self, encoder):
        self.encoder = encoder

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.encoder.encode([t]).pooled[0] for t in texts]).astype(np.float32)


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """A logistic quality head's probability of the positive class on ``x_test`` (the training rate when
    the training rows have one class only)."""
    from sklearn.linear_model import LogisticRegression

    if len(set(y_train)) < 2:
        return np.full(len(x_test), float(np.mean(y_train)))
    return LogisticRegression(C=1.0, max_iter=2000).fit(x_train, y_train).predict_proba(x_test)[:, 1]


def weak_falls_short(b: Benchmark) -> np.ndarray:
    """RouteLLM's label: the strong model does better on the prompt than the weak one."""
    return (b.strong > b.weak).astype(int)


def strong_win_rates(b: Benchmark, x: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The head's probability that the weak model falls short, fitted on ``train``, on ``test``."""
    y = weak_falls_short(b)
    return fit_predict(x[train], y[train], x[test])


def out_of_fold(b: Benchmark, x: np.ndarray, grouped: bool) -> np.ndarray:
    """Win rates for every prompt from heads that never saw it (5 folds; grouped keeps a group together)."""
    from sklearn.model_selection import GroupKFold, KFold

    splitter = GroupKFold(n_splits=FOLDS) if grouped else KFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    rates = np.zeros(len(b.prompts))
    for train, test in splitter.split(x, groups=b.groups if grouped else None):
        rates[test] = strong_win_rates(b, x, train, test)
    return rates


def curve_figures(rates: np.ndarray, strong: np.ndarray, weak: np.ndarray) -> dict:
    """APGR and CPT(50%), CPT(80%) of the operating points the rates give."""
    points = routellm_points(rates, strong, weak)
    s, w = float(strong.mean()), float(weak.mean())
    return {"apgr": round(apgr(points, s, w), 4), "cpt50": round(cpt(points, s, w, 0.5), 2),
            "cpt80": round(cpt(points, s, w, 0.8), 2),
            "points": [(round(p.strong_share, 2), round(p.score, 4)) for p in points]}


def subset(b: Benchmark, limit: int | None) -> Benchmark:
    """``limit`` prompts of ``b`` drawn reproducibly (all of them for None): a smoke run."""
    if limit is None or limit >= len(b.prompts):
        return b
    keep = np.sort(np.random.default_rng(SEED).permutation(len(b.prompts))[:limit])
    return Benchmark(b.name, [b.prompts[i] for i in keep], b.strong[keep], b.weak[keep], b.groups[keep])


def routellm_figures(embed: Embedder, limit: int | None = None) -> dict:
    """Every RouteLLM benchmark by its protocol here; ``leak`` counts test prompts also in training."""
    out = {}
    for name in ("mt_bench", "mmlu", "gsm8k"):
        b = subset(routellm_benchmark(name), limit)
        x = embed(b.prompts)
        if name == "mmlu":
            # MMLU repeats some questions: duplicates are grouped before drawing the training rows, so no
            # test question (or near copy) was trained on.
            clusters = np.array(duplicate_clusters([Row(p, "mmlu") for p in b.prompts]))
            order = np.random.default_rng(SEED).permutation(len(b.prompts))
            n_train = min(MMLU_TRAIN_ROWS, len(b.prompts) // 2)
            in_train = set(clusters[order[:n_train]])
            train = np.array([i for i in range(len(b.prompts)) if clusters[i] in in_train])
            test = np.array([i for i in range(len(b.prompts)) if clusters[i] not in in_train])
            figures = curve_figures(strong_win_rates(b, x, train, test), b.strong[test], b.weak[test])
            figures["leak"] = leak_check([b.prompts[i] for i in train], [b.prompts[i] for i in test]).as_dict()
            cv = curve_figures(out_of_fold(b, x, grouped=True), b.strong, b.weak)
            figures["cv_by_subject"] = {k: cv[k] for k in ("apgr", "cpt50", "cpt80")}
        else:
            figures = curve_figures(out_of_fold(b, x, grouped=name == "mt_bench"), b.strong, b.weak)
        figures |= {"rows": len(b.prompts), "strong_score": round(float(b.strong.mean()), 4),
                    "weak_score": round(float(b.weak.mean()), 4),
                    "routellm_best_apgr": ROUTELLM_BEST_APGR[name]}
        out[name] = figures
        log.info("routellm %s: APGR %.3f (RouteLLM's best %.3f)", name, figures["apgr"], ROUTELLM_BEST_APGR[name])
    return out


def _routerbench(split: str, subset: str, limit: int | None) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    rows = routerbench_table(subset, split)
    models = routerbench_models(rows[0])
    # A few rows lack some model's score or cost (arc_challenge train): they cannot be scored, so they go.
    complete = [r for r in rows if all(r[m] != "" and r[f"{m}|total_cost"] != "" for m in models)]
    if len(complete) < len(rows):
        log.info("routerbench %s %s: %d of %d rows lack a score or cost and are left out", subset, split,
                 len(rows) - len(complete), len(rows))
    rows = ds.sample(complete, limit, SEED) if limit else complete
    prompts = [prompt_text(r["prompt"]) for r in rows]
    scores = np.array([[float(r[m]) for m in models] for r in rows])
    costs = np.array([[float(r[f"{m}|total_cost"]) for m in models] for r in rows])
    return prompts, models, scores, costs


def routerbench_figures(embed: Embedder, limit: int | None = None) -> dict:
    """AIQ of the quality-aware router on each RouterBench subset beside the zero router and the oracle."""
    out = {}
    for subset in ROUTERBENCH_SUBSETS:
        train_prompts, models, train_scores, train_costs = _routerbench("train", subset, limit)
        test_prompts, test_models, scores, costs = _routerbench("test", subset, limit)
        assert models == test_models, f"{subset}: train and test list different models"
        questions = strip_shared_preamble(train_prompts + test_prompts)
        x_train, x_test = embed(questions[:len(train_prompts)]), embed(questions[len(train_prompts):])
        predicted = np.stack([fit_predict(x_train, (train_scores[:, m] > 0.5).astype(int), x_test)
                              for m in range(len(models))], axis=1)
        # Costs are per query; the router knows each model's mean cost per query from the training split.
        unit_cost = train_costs.mean(axis=0)
        router_cost, router_quality = [], []
        rows = np.arange(len(x_test))
        for lam in LAMBDAS:
            pick = (predicted - lam * unit_cost[None, :]).argmax(axis=1)
            router_cost.append(costs[rows, pick].mean())
            router_quality.append(scores[rows, pick].mean())
        single_cost, single_quality = costs.mean(axis=0), scores.mean(axis=0)
        cost_range = (float(single_cost.min()), float(single_cost.max()))
        oracle = oracle_point(scores, costs)
        out[subset] = {
            "aiq": round(aiq(np.array(router_cost), np.array(router_quality), cost_range), 4),
            "zero_router_aiq": round(aiq(single_cost, single_quality, cost_range), 4),
            "oracle_aiq": round(aiq(np.array([oracle[0]]), np.array([oracle[1]]), cost_range), 4),
            "best_single": {"model": models[int(single_quality.argmax())],
                            "quality": round(float(single_quality.max()), 4)},
            "leak": leak_check(train_prompts, test_prompts).as_dict(),
            "curve": [(float(c), float(q)) for c, q in zip(router_cost, router_quality)],
            "models": {m: (float(c), float(q)) for m, c, q in zip(models, single_cost, single_quality)},
            "oracle": oracle, "rows": {"train": len(train_prompts), "test": len(test_prompts)},
        }
        hx, hy = nondecreasing_hull(np.array(router_cost), np.array(router_quality))
        out[subset]["hull"] = [(float(c), float(q)) for c, q in zip(hx, hy)]
        log.info("routerbench %s: AIQ %.3f (zero router %.3f, oracle %.3f)", subset, out[subset]["aiq"],
                 out[subset]["zero_router_aiq"], out[subset]["oracle_aiq"])
    return out


# Follow-ups that lean on the turn before: alone they look easy, in their conversation they are not.
FOLLOW_UPS = ("Make it shorter.", "Now in French.", "Thanks, and add tests.", "Can you explain that step by step?",
              "Give me another example.", "Why?", "Rewrite it more formally.", "And the second one?")


# Fresh easy questions asked in an old conversation: they need nothing of the thread, and may leave its tier.
FRESH_EASY = ("What is the sentiment of this review: 'The battery died after two days.'?",
              "Extract the company names: Nvidia and Samsung announced a partnership in Seoul.",
              "Classify this ticket as billing, technical or shipping: 'I was charged twice for my order.'")


def mt_bench_questions() -> list[dict]:
    """MT-Bench's 80 two-turn questions."""
    path = ds.datasets_dir() / "mt_bench" / "question.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _decide(router, policy_settings, text: str, context: str = "", previous: int | None = None) -> int:
    from models.router import RouteInput
    from serve.tiers.policy import choose_tier

    (d,) = router.route_batch([RouteInput(text, context)])
    return choose_tier(d.tier, d.confidence, d.reason, previous_tier=previous,
                       sticky_max_confidence=policy_settings.sticky_max_confidence).tier


def task_routing_figures(router, policy_settings, limit: int | None = None) -> dict:
    """Tier accuracy on the held-out synthetic requests (held-out templates around test-split texts), the
    share of hard requests (their reasoning ones, and MT-Bench's math, reasoning and coding questions) sent
    to tier 1, the router's latency on one core, and follow-ups kept on a tier that can carry the thread."""
    import time

    from models.training.requests.render import build_requests
    from models.router import TASK_TIER, RouteInput

    examples = build_requests("test")
    examples = ds.sample(examples, limit, SEED) if limit else examples
    tiers, latencies = [], []
    for ex in examples:
        started = time.perf_counter()
        (d,) = router.route_batch([RouteInput(ex.user, "", ex.system)])
        latencies.append(time.perf_counter() - started)
        tiers.append(d.tier)
    expected = [TASK_TIER[ex.task] for ex in examples]
    questions = mt_bench_questions()[: limit or None]
    hard_mt = [q["turns"][0] for q in questions if q["category"] in ("math", "reasoning", "coding")]
    hard_tiers = [t for t, ex in zip(tiers, examples) if ex.task == "reasoning"]
    hard_tiers += [_decide(router, policy_settings, q) for q in hard_mt]
    kept = total = released = fresh = 0
    for q in questions:
        first = _decide(router, policy_settings, q["turns"][0])
        if first < 2:
            continue
        for follow_up in (q["turns"][1], *FOLLOW_UPS):
            total += 1
            kept += _decide(router, policy_settings, follow_up, q["turns"][0], previous=first) >= first
        for question in FRESH_EASY:
            fresh += 1
            released += _decide(router, policy_settings, question, q["turns"][0], previous=first) == 1
    return {"tier_accuracy": round(float(np.mean([t == e for t, e in zip(tiers, expected)])), 4),
            "confusion": confusion(expected, tiers),
            "hard_to_tier1_rate": round(float(np.mean([t == 1 for t in hard_tiers])), 4),
            "requests": len(examples), "hard_requests": len(hard_tiers),
            "follow_up_kept_rate": round(kept / max(total, 1), 4), "follow_ups": total,
            "fresh_easy_released_rate": round(released / max(fresh, 1), 4), "fresh_easy": fresh,
            "tier_mix": {t: round(tiers.count(t) / len(tiers), 4) for t in (1, 2, 3)},
            "expected_mix": {t: round(expected.count(t) / len(expected), 4) for t in (1, 2, 3)},
            "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 3)}


def peer_figures(limit: int | None = None) -> dict | None:
    """semantic-router 1.1.1 on the same task-routing rows (its routes from the training split), or None
    with the reason logged when its venv is not built (``make peer``)."""
    from models.training.base_model import packaged_model_dir
    from models.evaluation.peer import PeerUnavailable, semantic_router_figures, task_routing_rows

    test = task_routing_rows("test")
    try:
        out = semantic_router_figures(task_routing_rows("train"), ds.sample(test, limit, SEED) if limit else test,
                                      packaged_model_dir())
    except PeerUnavailable as exc:
        log.warning("peer not run: %s", exc)
        return None
    predicted = out.pop("predicted_tiers", [])
    out["confusion"] = confusion([tier for _, tier, _ in test], [p or 0 for p in predicted])
    return out


def under_rate(counts: list[list[int]]) -> float:
    """Share of the tier-2 and tier-3 requests of a confusion matrix routed to a lower tier or to none."""
    c = np.array(counts)
    return float((c[1, :2].sum() + c[2, :3].sum()) / max(c[1:].sum(), 1))


def over_rate(counts: list[list[int]]) -> float:
    """Share of the tier-1 requests of a confusion matrix routed to tier 2 or 3."""
    c = np.array(counts)
    return float(c[0, 2:].sum() / max(c[0].sum(), 1))


def confusion(expected: list[int], routed: list[int]) -> list[list[int]]:
    """Counts of requests by expected tier (rows 1-3) and routed tier (columns: none, 1, 2, 3)."""
    counts = np.zeros((3, 4), dtype=int)
    for e, r in zip(expected, routed):
        counts[e - 1, r] += 1
    return counts.tolist()


def flat_figures(routellm: dict, routerbench: dict, routing: dict | None = None, peer: dict | None = None) -> dict:
    """The flat ``figures.json`` keys: ``routellm.<bench>.<metric>``, ``routerbench.<subset>.<metric>``,
    ``task_routing.*``, ``multi_turn.*``, ``peer.semantic_router.*`` and ``router.p50_ms``."""
    flat = {}
    for bench, f in routellm.items():
        for metric in ("apgr", "cpt50", "cpt80"):
            flat[f"routellm.{bench}.{metric}"] = f[metric]
    for subset, f in routerbench.items():
        for metric in ("aiq", "zero_router_aiq", "oracle_aiq"):
            flat[f"routerbench.{subset}.{metric}"] = f[metric]
    if routing:
        flat["task_routing.tier_accuracy"] = routing["tier_accuracy"]
        flat["task_routing.hard_to_tier1_rate"] = routing["hard_to_tier1_rate"]
        flat["multi_turn.follow_up_kept_rate"] = routing["follow_up_kept_rate"]
        flat["multi_turn.fresh_easy_released_rate"] = routing["fresh_easy_released_rate"]
        flat["router.p50_ms"] = routing["p50_ms"]
    flat["peer.semantic_router.tier_accuracy"] = peer["tier_accuracy"] if peer else None
    flat["peer.semantic_router.p50_ms"] = peer["p50_ms"] if peer else None
    return flat


def write_report(out: Path, routellm: dict, routerbench: dict, routing: dict, peer: dict | None = None) -> dict:
    """``report.md``, ``figures.json`` and the PNG plots in ``out``; returns the flat figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    flat = flat_figures(routellm, routerbench, routing, peer)
    (out / "figures.json").write_text(json.dumps(flat, indent=2) + "\n")
    (out / "details.json").write_text(json.dumps({"routellm": routellm, "routerbench": routerbench,
                                                  "task_routing": routing, "peer": peer}, indent=1) + "\n")

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (bench, f) in zip(axes, routellm.items()):
        share, score = zip(*sorted(f["points"]))
        ax.plot(share, score, marker=".", label=f"Tierwise quality head (APGR {f['apgr']:.3f})")
        ax.axhline(f["strong_score"], color="red", linestyle="--", label="GPT-4-1106 (strong)")
        ax.axhline(f["weak_score"], color="grey", linestyle="--", label="Mixtral-8x7B (weak)")
        ax.plot([0, 100], [f["weak_score"], f["strong_score"]], color="grey", linestyle=":", label="random router")
        ax.set(title=f"{bench} (RouteLLM's best APGR {f['routellm_best_apgr']})", xlabel="strong model calls (%)",
               ylabel="score")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "routellm_quality_vs_strong_share.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (subset, f) in zip(axes, routerbench.items()):
        c, q = zip(*f["curve"])
        ax.plot(c, q, ".", alpha=0.4, label="router (λ sweep)")
        hc, hq = zip(*f["hull"])
        ax.plot(hc, hq, "-", label=f"router hull (AIQ {f['aiq']:.3f})")
        for model, (mc, mq) in f["models"].items():
            ax.plot(mc, mq, "x", color="black")
            ax.annotate(model.split("/")[-1], (mc, mq), fontsize=6)
        ax.plot(*f["oracle"], "*", color="green", markersize=10, label=f"oracle (AIQ {f['oracle_aiq']:.3f})")
        ax.set(title=f"RouterBench {subset} (zero router AIQ {f['zero_router_aiq']:.3f})", xlabel="mean cost per query (USD)",
               ylabel="quality", xscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "routerbench_quality_vs_cost.png", dpi=110)
    plt.close(fig)

    matrices = [("Tierwise", routing["confusion"])] + ([("semantic-router 1.1.1", peer["confusion"])] if peer else [])
    fig, axes = plt.subplots(1, len(matrices), figsize=(5.5 * len(matrices), 4.5), squeeze=False)
    for ax, (name, counts) in zip(axes[0], matrices):
        counts = np.array(counts)
        ax.imshow(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=9)
        ax.set(title=f"{name}: task routing", xticks=range(4), xticklabels=["none", "1", "2", "3"], yticks=range(3),
               yticklabels=["1", "2", "3"], xlabel="routed tier", ylabel="expected tier")
    fig.tight_layout()
    fig.savefig(out / "task_routing_confusion.png", dpi=110)
    plt.close(fig)

    lines = ["# Router report: quality-aware routing on public benchmarks", "",
             "Generated by `tierwise eval router`. Protocols and where they differ from the published ones: "
             "`models/evaluation/router.py`.", "",
             "## RouteLLM (GPT-4-1106 strong, Mixtral-8x7B weak)", "",
             "| benchmark | rows | APGR | RouteLLM's best APGR | CPT(50%) | CPT(80%) | protocol |",
             "|---|---|---|---|---|---|---|"]
    protocol = {"mt_bench": "5-fold CV grouped by question", "mmlu": f"train {MMLU_TRAIN_ROWS} seeded rows, test the rest",
                "gsm8k": "5-fold CV"}
    for bench, f in routellm.items():
        lines.append(f"| {bench} | {f['rows']} | {f['apgr']:.3f} | {f['routellm_best_apgr']:.3f} | {f['cpt50']:.1f}% | "
                     f"{f['cpt80']:.1f}% | {protocol[bench]} |")
    mmlu = routellm["mmlu"]
    lines += ["", f"MMLU, 5-fold CV grouped by subject: APGR {mmlu['cv_by_subject']['apgr']:.3f}, CPT(50%) "
              f"{mmlu['cv_by_subject']['cpt50']:.1f}%, CPT(80%) {mmlu['cv_by_subject']['cpt80']:.1f}%. Leak check of the "
              f"MMLU split: {mmlu['leak']}.", "", "![RouteLLM curves](routellm_quality_vs_strong_share.png)", "",
              "## RouterBench (11 models with costs; RouterDC's train/test splits)", "",
              "| subset | test rows | AIQ | zero router AIQ | oracle AIQ | best single model | leak check |",
              "|---|---|---|---|---|---|---|"]
    for subset, f in routerbench.items():
        best = f["best_single"]
        lines.append(f"| {subset} | {f['rows']['test']} | {f['aiq']:.4f} | {f['zero_router_aiq']:.4f} | "
                     f"{f['oracle_aiq']:.4f} | "
                     f"{best['model']} ({best['quality']:.3f}) | {f['leak']['leaking_test_rows']} leaking |")
    lines += ["", "![RouterBench curves](routerbench_quality_vs_cost.png)", "",
              "## Task routing and conversations", "",
              f"- Tier accuracy on {routing['requests']:,} held-out synthetic requests: {routing['tier_accuracy']:.3f}.",
              f"- Hard requests sent to tier 1: {routing['hard_to_tier1_rate']:.2%} of {routing['hard_requests']:,} "
              "(target < 1%).",
              f"- Follow-ups after a first turn on tier 2 or 3 (MT-Bench's second turns and generic follow-ups) kept on "
              f"that tier or above: {routing['follow_up_kept_rate']:.3f} of {routing['follow_ups']} (target ≥ 0.95).",
              f"- Fresh tier-1 questions asked in those conversations (sentiment, entities, a ticket's category) that "
              f"left for tier 1: {routing['fresh_easy_released_rate']:.3f} of {routing['fresh_easy']} (they may).",
              f"- Tier mix of the held-out requests (tiers 1 / 2 / 3): {' / '.join(f'{v:.3f}' for v in routing['tier_mix'].values())}"
              f" (expected by task: {' / '.join(f'{v:.3f}' for v in routing['expected_mix'].values())}).",
              f"- Router decision, one query, one core: p50 {routing['p50_ms']:.2f} ms.", "",
              "![Task routing confusion matrices](task_routing_confusion.png)", "",
              "## Peer: semantic-router 1.1.1 on the same task-routing rows", ""]
    if peer:
        lines += [f"- Tier accuracy {peer['tier_accuracy']:.3f} on {peer['test_rows']:,} requests (Tierwise "
                  f"{routing['tier_accuracy']:.3f}); unrouted {peer['unrouted_rate']:.1%}"
                  + (f", accuracy with those sent to tier 2: {peer['tier_accuracy_none_as_tier2']:.3f}"
                     if "tier_accuracy_none_as_tier2" in peer else "") + ".",
                  f"- Decision latency, one thread: p50 {peer['p50_ms']:.2f} ms (Tierwise {routing['p50_ms']:.2f} ms).",
                  f"- Requests for tier 2 or 3 sent below (to tier 1, or no route): {under_rate(peer['confusion']):.1%} "
                  f"(Tierwise {under_rate(routing['confusion']):.1%}); tier-1 requests sent above: "
                  f"{over_rate(peer['confusion']):.1%} (Tierwise {over_rate(routing['confusion']):.1%}). Sending a "
                  "request below costs quality, sending it above costs money.",
                  f"- Configuration: {json.dumps(peer.get('config', {}))}.", ""]
    else:
        lines += ["Not run: its venv is not built (`make peer`).", ""]
    (out / "report.md").write_text("\n".join(lines))
    return flat


def run_report(settings, out: Path, limit: int | None = None) -> dict:
    """Embed with the serving encoder, evaluate both protocols, write the report (``limit`` prompts per
    set for a smoke run)."""
    from models.encoder import Encoder

    from models.router import Router

    embed = Embedder(Encoder(settings.encoder.model_dir, settings.encoder.max_tokens, threads=1, device="cpu"))
    routing = task_routing_figures(Router.from_settings(settings), settings.router, limit)
    return write_report(out, routellm_figures(embed, limit), routerbench_figures(embed, limit), routing,
                        peer_figures(limit))
