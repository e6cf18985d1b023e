"""The tier-1 report on test splits (``tierwise eval tier1``): every head, the FAQ, and whether chat
requests get the answer they ask for.

It runs the int8 encoder that serves, one text per pass, exactly as the gateway does, and reads only test
splits (calibration, in :mod:`models.training.head_calibration`, reads held-out rows fine-tuning never saw).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.training import datasets as ds
from models.calibration import CALIBRATED_HEADS, Calibration
from models.encoder import Encoder
from models.entities import EntityTagger
from models.labels import SENTIMENT2, SENTIMENT3
from models.tier1 import load_heads
from models.training.head_calibration import HeadRunner, SentenceSet, sentence_set


# -- the test-split report -----------------------------------------------------------------------------------

REFERENCES = {
    "sst2": ("SST-2 dev (872)", "accuracy ≥ 0.90", "DistilBERT-SST-2: 0.913"),
    "banking77": ("Banking77 test (3,080)", "accuracy ≥ 0.92", "fine-tuned BERT-base: ~0.93"),
    "clinc150": ("CLINC150 test (4,500 + 1,000 oos)", "in-scope ≥ 0.95, oos recall ≥ 0.75", "BERT-base: 0.96 in-scope"),
    "conll2003": ("CoNLL-2003 test", "entity F1 ≥ 0.88", "spaCy small: ~0.85"),
    "wnut17": ("WNUT-17 test (its six types)", "entity F1 ≥ 0.45", "BERT-base: 0.45-0.50"),
    "stackfaq": ("StackFAQ queries (1,249)", "top-1 ≥ 0.85", "—"),
    "jhu_covid": ("JHU COVID user queries (1,387)", "top-1 ≥ 0.85", "—"),
    "faq": ("CLINC150 oos test against the sample FAQ", "≥ 0.95 not answered", "—"),
}


def _accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return round(float((pred == gold).mean()), 4)


def sentence_head_figures(runner: HeadRunner, calibration: Calibration, name: str, rows: SentenceSet) -> dict:
    """Accuracy, kept accuracy and share at the keep threshold, and ECE of one head on test rows."""
    logits = runner.sentence_logits(rows.head, rows.texts)
    p = calibration.probs(rows.head, logits)
    pred, conf = p.argmax(axis=1), p.max(axis=1)
    kept = conf >= calibration.get(rows.head).threshold
    from models.training.fitting import expected_calibration_error

    runner.clear()
    return {f"{name}.accuracy": _accuracy(pred, rows.gold),
            f"{name}.kept_accuracy": _accuracy(pred[kept], rows.gold[kept]) if kept.any() else None,
            f"{name}.kept_share": round(float(kept.mean()), 4),
            f"{name}.ece": round(expected_calibration_error(conf, pred == rows.gold), 4)}


def clinc_figures(runner: HeadRunner, calibration: Calibration, limit: int | None = None) -> dict:
    """CLINC150 test: in-scope accuracy and out-of-scope recall, where an answer under the keep threshold
    counts as out of scope (what tier 1 does with it), plus the argmax figures without the threshold."""
    labels = runner.heads["clinc150"].labels
    rows = ds.sample(ds.clinc150("test"), limit) if limit else ds.clinc150("test")
    texts = [ds.capitalise(t) for t, _ in rows]
    gold = np.array([labels.index(l) for _, l in rows])
    p = calibration.probs("clinc150", runner.sentence_logits("clinc150", texts))
    runner.clear()
    oos = labels.index("oos")
    pred = p.argmax(axis=1)
    rejected = (pred == oos) | (p.max(axis=1) < calibration.get("clinc150").threshold)
    final = np.where(rejected, oos, pred)
    in_scope = gold != oos
    return {"clinc150.in_scope_accuracy": _accuracy(final[in_scope], gold[in_scope]),
            "clinc150.oos_recall": round(float(rejected[~in_scope].mean()), 4),
            "clinc150.in_scope_accuracy_argmax": _accuracy(pred[in_scope], gold[in_scope]),
            "clinc150.oos_recall_argmax": round(float((pred[~in_scope] == oos).mean()), 4)}


def entity_f1(runner: HeadRunner, head: str, sentences: list[ds.TaggedSentence]) -> float:
    """Entity-level F1 (seqeval, exact spans and types) of a tagging head on detokenised sentences."""
    from seqeval.metrics import f1_score

    gold, pred = [], []
    for s in sentences:
        text, offsets = ds.detokenize_with_offsets(s.tokens)
        _, tokens, piece_offsets, word_ids = runner.states(text)
        tagger = EntityTagger(runner.heads[head])
        from models.entities import word_spans

        spans = word_spans(piece_offsets, word_ids)
        tags = ["O"] * len(s.tokens)
        if spans:
            labels = tagger.head.predict_proba(tokens[[sp[0] for sp in spans]]).argmax(axis=1)
            starts = {a: i for i, (a, _) in enumerate(offsets)}
            for (_, start, _), k in zip(spans, labels):
                if start in starts:
                    tags[starts[start]] = tagger.head.labels[k]
        gold.append(s.tags)
        pred.append(_repair_bio(tags))
    runner.clear()
    return round(float(f1_score(gold, pred)), 4)


def _repair_bio(tags: list[str]) -> list[str]:
    """A token tag sequence as the tagger decodes it: an I-X that does not continue an X opens one."""
    out = []
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and (i == 0 or out[-1][2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
    return out


def faq_figures(encoder: Encoder, sample_faq_path: Path, min_confidence: float, calibration: Calibration,
                limit: int | None = None) -> dict:
    """Top-1 retrieval on StackFAQ and JHU COVID (every entry's question and answer indexed, as a FAQ file
    lists them) and abstention of the sample FAQ (below ``min_confidence``, a calibrated probability) on
    CLINC150's out-of-scope test queries."""
    from models.faq import FaqEntry, FaqIndex

    def embed(texts: list[str]) -> np.ndarray:
        return np.stack([encoder.encode([t]).pooled[0] for t in texts])

    figures = {}
    for name, entries, queries in (ds.stackfaq_faq(), _jhu()):
        queries = ds.sample(queries, limit) if limit else queries
        index = FaqIndex([FaqEntry(i, q, a, (q, a)) for i, q, a in entries], embed)
        hits = [m.entry.id == gold for m, gold in zip(index.best(embed([q for q, _ in queries])), (g for _, g in queries))]
        figures[f"{name}.top1"] = round(float(np.mean(hits)), 4)
    sample = FaqIndex.from_path(sample_faq_path, embed)
    oos = [t for t, l in ds.clinc150("test") if l == "oos"][:limit]
    p = np.array([calibration.score_prob("faq", m.score) for m in sample.best(embed(oos))])
    figures["faq.abstention"] = round(float((p < min_confidence).mean()), 4)
    return figures


def _jhu():
    import json

    rows = json.loads((ds.datasets_dir() / "covid_faq_jhu" / "query_answer_pairs.json").read_text())
    faqs = {}
    for r in rows:
        if r["query_type"] == "faq":
            faqs.setdefault(r["answer"], r["question"].strip())
    ids = {a: str(i) for i, a in enumerate(faqs)}
    entries = [(ids[a], q, a) for a, q in faqs.items()]
    queries = [(q, ids[a]) for q, a in ds.covid_jhu_queries() if q and a in ids]
    return "jhu_covid", entries, queries


# -- answer fit: held-out requests through the chat API ------------------------------------------------------


@dataclass
class FitOutcome:
    """How the gateway handled one held-out request."""

    example: object
    tier: int | None
    task: str | None
    right: bool
    wrongly_kept: bool
    answered_tier1: bool
    payload_ok: bool | None
    labels_ok: bool | None


def _expected_answer_ok(ex, result: dict, content: str) -> bool:
    """Whether tier 1's answer is the right one for a held-out request (the structured result, and the
    message content carrying it)."""
    low = content.lower()
    if ex.task in ("sentiment", "classify"):
        return (result.get("label") or "").lower() == (ex.gold or "").lower() and ex.gold.lower() in low
    if ex.task == "intent":
        return result.get("intent") == ex.gold or (ex.gold == "oos" and result.get("intent") == "out_of_scope")
    if ex.task == "entities":
        got = {(e["text"], e["type"]) for e in result.get("entities", [])}
        return got == set(map(tuple, ex.gold_entities)) and all(t.lower() in low for t, _ in ex.gold_entities)
    return False


async def answer_fit(settings, examples: list) -> list[FitOutcome]:
    """Send every example through the chat API in-process (FastAPI app, router and tier 1 in this process,
    no tier above tier 1 configured, ``when_unsure: refuse``): a request that is not answered on tier 1 went
    up. A tier-1 task answered right on tier 1 is right; any request that went up is right (it is answered
    by a tier that can); a request answered wrongly on tier 1, or a non-tier-1 request answered there, is
    wrongly kept. Canned intent responses are off: the requests carry no gold for them."""
    import httpx

    from models.router import Router
    from models.tier1 import Tier1Models
    from serve.api.routes import app, bind_services
    from serve.services import build_local_services

    settings = settings.model_copy(deep=True)
    settings.tier1.when_unsure = "refuse"
    # The held-out requests carry no gold for canned intent responses: those are a deployment's choice.
    settings.tier1.intent_responses = {}
    router = Router.from_settings(settings)
    tier1 = Tier1Models.from_settings(settings, router.encoder, router.faq)
    bind_services(build_local_services(settings, router, tier1, "no tier-3 provider (evaluation)"))
    outcomes = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://eval") as client:
        for ex in examples:
            messages = ([{"role": "system", "content": ex.system}] if ex.system else []) + [
                {"role": "user", "content": ex.user}]
            r = await client.post("/v1/chat/completions", json={"model": "auto", "messages": messages})
            body = r.json()
            info = body.get("tierwise") or body.get("error", {}).get("tierwise") or {}
            answered = r.status_code == 200 and info.get("tier") == 1
            tier1_task = ex.task in ("sentiment", "classify", "entities", "intent")
            ok = answered and tier1_task and _expected_answer_ok(
                ex, info.get("result") or {}, body["choices"][0]["message"]["content"])
            route = await client.post("/v1/route", json={"model": "auto", "messages": messages})
            parsed = (route.json().get("scores") or {}).get("parsed") if route.status_code == 200 else None
            payload_ok = labels_ok = None
            if parsed is not None and tier1_task:
                text = ex.system + "\n\n" + ex.user if ex.system else ex.user
                if ex.payload:
                    payload_ok = parsed["payload"].strip() == text[ex.payload[0]:ex.payload[1]].strip()
                if ex.labels:
                    labels_ok = sorted(l.lower() for l in parsed["labels"]) == sorted(
                        text[a:b].lower() for a, b in ex.labels)
            outcomes.append(FitOutcome(ex, info.get("tier"), info.get("task"), ok or not answered,
                                       answered and not ok, answered, payload_ok, labels_ok))
    return outcomes


def answer_fit_figures(outcomes: list[FitOutcome]) -> dict:
    """The answer-fit section's flat figures."""
    tier1 = [o for o in outcomes if o.example.task in ("sentiment", "classify", "entities", "intent")]
    answered = [o for o in outcomes if o.answered_tier1]
    parse = [o for o in tier1 if o.task is not None]
    payload = [o.payload_ok for o in tier1 if o.payload_ok is not None]
    labels = [o.labels_ok for o in tier1 if o.labels_ok is not None]
    unseen = [o for o in tier1 if o.example.label_set in _unseen_label_sets()]

    def share(xs) -> float | None:
        return round(float(np.mean(xs)), 4) if len(xs) else None

    return {
        "answer_fit.requests": len(outcomes),
        "answer_fit.accuracy": share([o.right for o in outcomes]),
        "answer_fit.wrongly_kept_rate": share([o.wrongly_kept for o in outcomes]),
        "answer_fit.answered_accuracy": share([not o.wrongly_kept for o in answered]),
        "answer_fit.tier1_coverage": share([o.answered_tier1 and not o.wrongly_kept for o in tier1]),
        "answer_fit.task_parse_accuracy": share([o.task == o.example.task or (o.example.task not in
                                                 ("sentiment", "classify", "entities", "intent") and o.tier != 1)
                                                 for o in outcomes]),
        "answer_fit.tier1_task_parse_accuracy": share([o.task == o.example.task for o in parse]),
        "answer_fit.payload_accuracy": share(payload),
        "answer_fit.label_set_accuracy": share(labels),
        "answer_fit.unseen_label_sets_coverage": share([o.answered_tier1 and not o.wrongly_kept for o in unseen]),
        "answer_fit.unseen_label_sets_answered_accuracy": share(
            [not o.wrongly_kept for o in unseen if o.answered_tier1]),
    }


def _unseen_label_sets() -> frozenset[str]:
    from models.training.requests.render import UNSEEN_LABEL_SETS

    return UNSEEN_LABEL_SETS


def head_latency(tier1, rounds: int = 200) -> dict:
    """p50/p99 milliseconds of one direct tier-1 request per head on one core (encoder pass included)."""
    from models.tier1 import Tier1Request

    texts = {"sentiment": "The battery died after two days and support never answered.",
             "entities": "Angela visited the Berlin office of Siemens last Tuesday.",
             "intent": "Please book me a flight to Boston tomorrow morning.",
             "faq": "How can I send back something I bought last week?"}
    figures = {}
    all_times = []
    for task, text in texts.items():
        tier1.answer_batch([Tier1Request(task, text)])
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            tier1.answer_batch([Tier1Request(task, text)])
            times.append((time.perf_counter() - started) * 1000)
        all_times += times
        figures[f"latency_ms.{task}.p50"] = round(float(np.percentile(times, 50)), 3)
        figures[f"latency_ms.{task}.p99"] = round(float(np.percentile(times, 99)), 3)
    figures["latency_ms.p50"] = round(float(np.percentile(all_times, 50)), 3)
    return figures


def run_report(settings, out_dir: Path, max_requests: int | None = None, limit: int | None = None) -> dict:
    """``tierwise eval tier1``: every figure of the tier-1 report, written to ``out_dir/figures.json`` and
    ``out_dir/report.md``; returns the figures. ``limit`` samples that many rows of each test set (a smoke
    run); the report's figures use them all."""
    import asyncio
    import json

    from models.training.requests.render import build_requests
    from models.training.quantize import kernel_report
    from models.tier1 import Tier1Models

    out_dir.mkdir(parents=True, exist_ok=True)
    heads_dir = Path(settings.router.heads_dir)
    heads = load_heads(heads_dir)
    calibration = Calibration.load(heads_dir / "calibration.json")
    encoder = Encoder(settings.encoder.model_dir, threads=1, device="cpu")
    runner = HeadRunner(encoder, heads)

    def rows(items: list) -> list:
        return ds.sample(items, limit) if limit else items

    figures: dict = {}
    figures |= sentence_head_figures(runner, calibration, "sst2",
                                     sentence_set("sentiment2", rows(ds.sst2("dev")), SENTIMENT2))
    figures |= {k.replace("sst2.", "sst2_test."): v for k, v in sentence_head_figures(
        runner, calibration, "sst2", sentence_set("sentiment2", rows(ds.sst2("test")), SENTIMENT2)).items()}
    figures |= sentence_head_figures(runner, calibration, "sentiment3_tweeteval",
                                     sentence_set("sentiment3", rows(ds.tweeteval("sentiment", "test")), SENTIMENT3))
    figures |= sentence_head_figures(runner, calibration, "banking77",
                                     sentence_set("banking77", rows(ds.banking77("test")), heads["banking77"].labels))
    figures |= clinc_figures(runner, calibration, limit)
    figures["conll2003.f1"] = entity_f1(runner, "ner_conll", rows(ds.conll2003("test")))
    figures["wnut17.f1"] = entity_f1(runner, "ner_wnut", rows(ds.wnut17_own_types("test")))
    figures |= faq_figures(encoder, settings.tier1.faq_path, settings.tier1.faq_min_confidence, calibration, limit)
    tier1 = Tier1Models.from_settings(settings, encoder)
    figures |= head_latency(tier1, rounds=20 if limit else 200)
    examples = build_requests("test")
    if max_requests is not None:
        examples = ds.sample(examples, max_requests)
    outcomes = asyncio.run(answer_fit(settings, examples))
    figures |= answer_fit_figures(outcomes)
    figures["calibration"] = {name: calibration.get(name).__dict__ for name in CALIBRATED_HEADS}
    figures["kernels"] = kernel_report()
    (out_dir / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_report(figures, outcomes))
    return figures


def _fmt(value) -> str:
    return "—" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def render_report(figures: dict, outcomes: list[FitOutcome]) -> str:
    """``report.md``: every test set beside its reference, calibration, latency and answer fit."""
    f = figures
    target_rows = [
        ("sst2", f"accuracy {_fmt(f['sst2.accuracy'])} (kept {_fmt(f['sst2.kept_accuracy'])} on "
                 f"{_fmt(f['sst2.kept_share'])} of rows)", f["sst2.accuracy"] - 0.90),
        ("banking77", f"accuracy {_fmt(f['banking77.accuracy'])}", f["banking77.accuracy"] - 0.92),
        ("clinc150", f"in-scope {_fmt(f['clinc150.in_scope_accuracy'])}, oos recall {_fmt(f['clinc150.oos_recall'])}"
                     f" (argmax: {_fmt(f['clinc150.in_scope_accuracy_argmax'])}, {_fmt(f['clinc150.oos_recall_argmax'])})",
         min(f["clinc150.in_scope_accuracy"] - 0.95, f["clinc150.oos_recall"] - 0.75)),
        ("conll2003", f"entity F1 {_fmt(f['conll2003.f1'])}", f["conll2003.f1"] - 0.88),
        ("wnut17", f"entity F1 {_fmt(f['wnut17.f1'])}", f["wnut17.f1"] - 0.45),
        ("stackfaq", f"top-1 {_fmt(f['stackfaq.top1'])}", f["stackfaq.top1"] - 0.85),
        ("jhu_covid", f"top-1 {_fmt(f['jhu_covid.top1'])}", f["jhu_covid.top1"] - 0.85),
        ("faq", f"not answered {_fmt(f['faq.abstention'])}", f["faq.abstention"] - 0.95),
    ]
    lines = ["# Tier-1 report", "", "Written by `tierwise eval tier1`; every figure is on a test split (SST-2: its dev "
             "set, the GLUE convention), with the int8 encoder that serves, one text per pass.", "",
             "## Test sets beside their reference models", "",
             "| task | data | Tierwise | target | reference | miss |", "|---|---|---|---|---|---|"]
    for key, ours, margin in target_rows:
        data, target, reference = REFERENCES[key]
        miss = "met" if margin >= 0 else f"missed by {-margin:.3f}"
        lines.append(f"| {key} | {data} | {ours} | {target} | {reference} | {miss} |")
    lines += ["", f"Also: SST-2 test (1,821) accuracy {_fmt(f['sst2_test.accuracy'])}; TweetEval sentiment test "
              f"(three-way) accuracy {_fmt(f['sentiment3_tweeteval.accuracy'])}.", "",
              "## Calibration and the keep/escalate split", "",
              "Temperatures and keep thresholds are fitted on held-out rows (dev/val splits, or a held-out tenth "
              "of train), so that kept answers are ≥ 97% right there; ECE is on the test rows.", "",
              "| head | temperature | keep threshold | held-out kept accuracy | held-out kept share | held-out ECE |",
              "|---|---|---|---|---|---|"]
    for name, c in f["calibration"].items():
        lines.append(f"| {name} | {_fmt(c['temperature'])} | {_fmt(c['threshold'])} | {_fmt(c['kept_accuracy'])} | "
                     f"{_fmt(c['kept_share'])} | {_fmt(c['ece'])} |")
    lines += ["", "| test set | kept share | kept accuracy | ECE |", "|---|---|---|---|"]
    for name in ("sst2", "sst2_test", "sentiment3_tweeteval", "banking77"):
        lines.append(f"| {name} | {_fmt(f[f'{name}.kept_share'])} | {_fmt(f[f'{name}.kept_accuracy'])} | "
                     f"{_fmt(f[f'{name}.ece'])} |")
    lines += ["", "## Latency per head, one core", "",
              "One direct request (`Tier1Models.answer_batch`, encoder pass included), int8 ONNX Runtime, one thread.",
              "", "| head | p50 ms | p99 ms |", "|---|---|---|"]
    for task in ("sentiment", "entities", "intent", "faq"):
        lines.append(f"| {task} | {_fmt(f[f'latency_ms.{task}.p50'])} | {_fmt(f[f'latency_ms.{task}.p99'])} |")
    k = f["kernels"]
    lines += ["", f"CPU: avx2 {k.get('avx2')}, avx512f {k.get('avx512f')}, avx512_vnni {k.get('avx512_vnni')}; "
              f"int8 GEMM kernel: {k.get('int8_gemm')}.", "",
              "## Answer fit: held-out templates over test-split texts, through the chat API", "",
              f"{f['answer_fit.requests']} requests from `models/training/requests/`'s test split (templates never "
              "used in training, texts from test splits, four label sets never seen in training), sent to "
              "`/v1/chat/completions` in-process with no tier above tier 1 configured and `when_unsure: refuse`. "
              "Right: a tier-1 request answered right on tier 1, or any request that went up. Wrongly kept: "
              "answered on tier 1 and wrong (any generation or reasoning request answered there counts).", "",
              "| figure | value |", "|---|---|"]
    for key in sorted(k for k in f if k.startswith("answer_fit.")):
        lines.append(f"| {key[len('answer_fit.'):]} | {_fmt(f[key])} |")
    lines += ["", "| asked task | requests | answered on tier 1 | right on tier 1 | wrongly kept |", "|---|---|---|---|---|"]
    for task in ("sentiment", "classify", "entities", "intent", "faq", "generation", "reasoning"):
        rows = [o for o in outcomes if o.example.task == task]
        if rows:
            lines.append(f"| {task} | {len(rows)} | {sum(o.answered_tier1 for o in rows)} | "
                         f"{sum(o.answered_tier1 and not o.wrongly_kept for o in rows)} | {sum(o.wrongly_kept for o in rows)} |")
    wrong = [o for o in outcomes if o.wrongly_kept][:15]
    if wrong:
        lines += ["", "Wrongly kept, first examples:", ""]
        lines += [f"- ({o.example.task} → {o.task}) `{(o.example.system + ' ' + o.example.user).strip()[:160]}`"
                  for o in wrong]
    return "\n".join(lines) + "\n"


