"""Train the router's task head and the tier-1 heads on the encoder's features; report test metrics.

``tierwise train`` runs :func:`train_all`. Training reads only train/dev splits; the figures written to
``models/heads/metrics.json`` (and quoted in the model card) come from the test splits.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from models import datasets as ds
from models.encoder import Encoder
from models.entities import EntityTagger, word_features
from models.heads import HEADS_DIR, LinearHead
from models.router import task_features

log = logging.getLogger(__name__)

TASKS = ("sentiment", "entities", "faq", "intent", "generation", "reasoning")
SEEDS_PATH = Path(__file__).resolve().parent / "data" / "task_seeds.yaml"
ACCEPTANCE_EXAMPLES = (
    "Product is great!",
    "Meet John at Paris cafe on Monday.",
    "What is our return policy?",
    "Write a professional follow-up.",
    "Compare these two business strategies.",
)


def featurise(encoder: Encoder, texts: list[str], rows, batch: int = 64) -> np.ndarray:
    """``rows(encoded, chunk)`` for every chunk of ``texts``, stacked in input order.

    Chunks are grouped by length so that padding stays small where the encoder pads (CUDA).
    """
    order = np.argsort([len(t) for t in texts])
    parts = []
    for i in range(0, len(texts), batch):
        chunk = [texts[j] for j in order[i : i + batch]]
        parts.append(rows(encoder.encode(chunk), chunk))
    out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
    out[order] = np.vstack(parts)
    return out


def embed(encoder: Encoder, texts: list[str]) -> np.ndarray:
    """Pooled embeddings of many texts."""
    return featurise(encoder, texts, lambda encoded, _: encoded.pooled)


def task_dataset(seed: int = 0) -> list[tuple[str, str]]:
    """Rows ``(text, task)`` for the router's task head, drawn from train splits and the seed file."""
    seeds = yaml.safe_load(SEEDS_PATH.read_text())
    rng = np.random.default_rng(seed)
    sentiment = [t for t, _ in ds.sample(ds.sst2("train"), 1500, seed) + ds.sample(ds.labelled_review_sentences(), 1000, seed)]
    entity_sents = [s for s in ds.conll2003("train") if len(s.tokens) >= 5 and any(t != "O" for t in s.tags)]
    entities = [ds.detokenize(s.tokens) for s in ds.sample(entity_sents, 2000, seed)]
    entities += [" ".join(s.tokens) for s in ds.sample([s for s in ds.wnut17("train") if any(t != "O" for t in s.tags)], 500, seed)]
    faq = [t for t, _ in ds.sample(ds.banking77("train"), 1500, seed)]
    faq += [t for t, _ in ds.sample(ds.covid_jhu_queries(), 700, seed)]
    intent = [t[:1].upper() + t[1:] for t, i in ds.sample(ds.clinc150("train"), 2000, seed) if i != "oos"]
    intent += [t for t, _ in ds.sample(ds.snips_cased("train"), 1000, seed)]
    generation = [p for p, c in ds.arena_hard() if c == "creative_writing"]
    generation += [p for p, c in ds.vicuna_bench() if c in ("writing", "roleplay", "generic", "counterfactual")]
    generation += ds.routerbench_prompts("mbpp_train") + ds.routerdc_questions("humaneval_train")
    reasoning = [p for p, c in ds.arena_hard() if c == "hard_prompt"] + ds.arena_bench_v1()
    reasoning += ds.sample(ds.gsm8k_train(), 800, seed) + ds.sample(ds.routerdc_questions("mmlu_train"), 800, seed)
    reasoning += ds.sample(ds.routerdc_questions("arc_challenge_train"), 300, seed)
    reasoning += [p for p, c in ds.vicuna_bench() if c in ("fermi", "math", "coding", "common-sense")]
    for task, pool in (("generation", generation), ("reasoning", reasoning)):
        combos = [f"{v} {o}." for v in seeds[task]["verbs"] for o in seeds[task]["objects"]]
        pool.extend(combos * 2)
    for task, pool in (("sentiment", sentiment), ("entities", entities)):
        prefixes = seeds["prefixes"][task]
        pool.extend(prefixes[rng.integers(len(prefixes))] + t for t in ds.sample(pool, len(pool) // 4, seed + 1))
    rows = [(t, task) for task, pool in zip(TASKS, (sentiment, entities, faq, intent, generation, reasoning)) for t in pool]
    leaked = {t for t, _ in rows} & set(ACCEPTANCE_EXAMPLES)
    if leaked:
        raise ValueError(f"acceptance examples leaked into the task training data: {sorted(leaked)}")
    return rows


def fit(x: np.ndarray, y: list[str], c: float = 4.0) -> LogisticRegression:
    """Multinomial logistic regression, class-balanced."""
    return LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(x, y)


def router_features(encoder: Encoder, tagger: EntityTagger, texts: list[str]) -> np.ndarray:
    """The router's task-head input for many texts."""

    def rows(encoded, chunk: list[str]) -> np.ndarray:
        ents = [tagger.extract(t, encoded.tokens[k], encoded.offsets[k], encoded.word_ids[k])
                for k, t in enumerate(chunk)]
        return task_features(encoded.pooled, chunk, ents)

    return featurise(encoder, texts, rows)


def train_task_head(encoder: Encoder, tagger: EntityTagger) -> tuple[LinearHead, dict]:
    """Router task head; reports accuracy on a held-out 15% of its (train-split) rows."""
    rows = task_dataset()
    texts, labels = [t for t, _ in rows], [l for _, l in rows]
    x = router_features(encoder, tagger, texts)
    x_tr, x_te, y_tr, y_te = train_test_split(x, labels, test_size=0.15, random_state=0, stratify=labels)
    held_out = float((fit(x_tr, y_tr).predict(x_te) == np.array(y_te)).mean())
    head = LinearHead.from_sklearn(fit(x, labels))
    counts = {t: labels.count(t) for t in TASKS}
    return head, {"task_heldout_accuracy": round(held_out, 4), "task_rows": counts}


def train_sentiment_head(encoder: Encoder) -> tuple[LinearHead, dict]:
    """SST-2 (train+dev) plus the review sentences; reports SST-2 test accuracy."""
    rows = ds.sst2("train") + ds.sst2("dev") + ds.labelled_review_sentences()
    clf = fit(embed(encoder, [t for t, _ in rows]), [l for _, l in rows], c=2.0)
    test = ds.sst2("test")
    acc = float((clf.predict(embed(encoder, [t for t, _ in test])) == np.array([l for _, l in test])).mean())
    return LinearHead.from_sklearn(clf), {"sst2_test_accuracy": round(acc, 4)}


def train_intent_head(encoder: Encoder) -> tuple[LinearHead, dict]:
    """CLINC150 (train+val, with its out-of-scope rows); reports in-scope accuracy and oos recall."""
    rows = ds.clinc150("train") + ds.clinc150("val")
    clf = fit(embed(encoder, [t for t, _ in rows]), [l for _, l in rows], c=8.0)
    test = ds.clinc150("test")
    pred = clf.predict(embed(encoder, [t for t, _ in test]))
    gold = np.array([l for _, l in test])
    in_scope = gold != "oos"
    return LinearHead.from_sklearn(clf), {
        "clinc150_test_inscope_accuracy": round(float((pred[in_scope] == gold[in_scope]).mean()), 4),
        "clinc150_test_oos_recall": round(float((pred[~in_scope] == "oos").mean()), 4),
    }


def _align(encoder: Encoder, sentences: list[ds.TaggedSentence]):
    """Per encoder word: features, the gold tag, and which corpus token it starts (for scoring)."""
    feats, tags, firsts = [], [], []
    for s in sentences:
        text = " ".join(s.tokens)
        starts = np.cumsum([0] + [len(t) + 1 for t in s.tokens[:-1]])
        enc = encoder.encode([text])
        f, spans = word_features(text, enc.tokens[0], enc.offsets[0], enc.word_ids[0])
        seen = set()
        sent_tags, sent_firsts = [], []
        for _, start, _ in spans:
            tok = int(np.searchsorted(starts, start, side="right") - 1)
            gold = s.tags[tok]
            if tok in seen:
                gold = "O" if gold == "O" else "I-" + gold[2:]
                sent_firsts.append(-1)
            else:
                sent_firsts.append(tok)
            seen.add(tok)
            sent_tags.append(gold)
        feats.append(f)
        tags.append(sent_tags)
        firsts.append(sent_firsts)
    return feats, tags, firsts


def _entity_f1(head: LinearHead, encoder: Encoder, sentences: list[ds.TaggedSentence]) -> float:
    from seqeval.metrics import f1_score

    feats, _, firsts = _align(encoder, sentences)
    gold, pred = [], []
    for s, f, first in zip(sentences, feats, firsts):
        labels = [head.labels[i] for i in head.predict_proba(f).argmax(axis=1)] if len(f) else []
        by_token = ["O"] * len(s.tokens)
        for lab, tok in zip(labels, first):
            if tok >= 0:
                by_token[tok] = lab
        gold.append(s.tags)
        pred.append(by_token)
    return float(f1_score(gold, pred))


def train_entity_head(encoder: Encoder, n_sentences: int = 10000) -> tuple[LinearHead, dict]:
    """CoNLL-2003 train tagging head; reports entity F1 on CoNLL-2003 test and WNUT-17 test."""
    feats, tags, _ = _align(encoder, ds.sample(ds.conll2003("train"), n_sentences))
    x = np.vstack([f for f in feats if len(f)])
    y = [t for sent in tags for t in sent]
    head = LinearHead.from_sklearn(LogisticRegression(C=0.3, max_iter=1000).fit(x, y))
    return head, {
        "conll2003_test_entity_f1": round(_entity_f1(head, encoder, ds.conll2003("test")), 4),
        "wnut17_test_entity_f1_mapped_types": round(_entity_f1(head, encoder, ds.wnut17("test")), 4),
    }


HEADS = ("entities", "task", "sentiment", "intent")


def train_all(encoder_dir: Path, out_dir: Path = HEADS_DIR, only: tuple[str, ...] = HEADS) -> dict:
    """Train the heads named in ``only`` (in dependency order), write ``<name>.npz`` and merge their
    figures into ``metrics.json`` in ``out_dir``; return all metrics."""
    unknown = set(only) - set(HEADS)
    if unknown:
        raise ValueError(f"unknown heads {sorted(unknown)}; choose from {HEADS}")
    encoder = Encoder(encoder_dir, threads=2)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.json"
    metrics: dict = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    trainers = {
        "entities": train_entity_head,
        # The task head reads the entity head's output, so it trains after it (or loads the saved one).
        "task": lambda enc: train_task_head(enc, EntityTagger(LinearHead.load(out_dir / "entities.npz"))),
        "sentiment": train_sentiment_head,
        "intent": train_intent_head,
    }
    for name in HEADS:
        if name not in only:
            continue
        started = time.perf_counter()
        head, m = trainers[name](encoder)
        head.save(out_dir / f"{name}.npz")
        metrics.update(m)
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
        log.info("trained %s head in %.0f s: %s", name, time.perf_counter() - started, m)
    return metrics
