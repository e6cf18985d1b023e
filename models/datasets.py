"""Loaders for the public data sets in ``../shared/datasets`` (train and dev splits feed training;
test splits feed evaluation only).

The folder is a setting: ``TIERWISE_DATASETS``, else ``../shared/datasets`` beside the repository.
"""

from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def datasets_dir() -> Path:
    """The data-set folder, checked to exist."""
    path = Path(os.environ.get("TIERWISE_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
    if not path.is_dir():
        raise FileNotFoundError(f"data-set folder {path} not found: set TIERWISE_DATASETS")
    return path


@dataclass(frozen=True)
class TaggedSentence:
    """A tokenised sentence with one BIO tag per token."""

    tokens: list[str]
    tags: list[str]


def sst2(split: str) -> list[tuple[str, str]]:
    """SST-2 sentences as ``(text, "negative"|"positive")``; split is train, dev or test."""
    rows = []
    for line in (datasets_dir() / "sst2" / f"stsa.binary.{split}").read_text().splitlines():
        label, _, text = line.partition(" ")
        rows.append((text, "positive" if label == "1" else "negative"))
    return rows


def labelled_review_sentences() -> list[tuple[str, str]]:
    """Amazon, IMDB and Yelp sentences (Kotzias et al.) as ``(text, sentiment)``; no test split."""
    rows = []
    folder = datasets_dir() / "sentiment_labelled_sentences"
    for name in ("amazon_cells", "imdb", "yelp"):
        for line in (folder / f"{name}_labelled.txt").read_text(errors="replace").splitlines():
            text, _, label = line.rpartition("\t")
            if text:
                rows.append((text.strip(), "positive" if label.strip() == "1" else "negative"))
    return rows


def clinc150(split: str) -> list[tuple[str, str]]:
    """CLINC150 (full) as ``(text, intent)`` with out-of-scope rows labelled ``oos``."""
    data = json.loads((datasets_dir() / "clinc150" / "data_full.json").read_text())
    return [(t, i) for t, i in data[split] + data[f"oos_{split}"]]


SNIPS_NAME_SLOTS = frozenset({
    "album", "artist", "city", "country", "state", "entity_name", "geographic_poi", "location_name",
    "movie_name", "object_name", "playlist", "restaurant_name", "service", "track", "poi",
})


def snips_cased(split: str) -> list[tuple[str, str]]:
    """SNIPS utterances as ``(text, intent)`` with names capitalised as people type them.

    SNIPS (like CLINC) is lower-cased; its slot tags say which words are names (artists, cities, …), so
    they and the first word are capitalised. Without this, casing would separate commands from
    entity-bearing sentences in training but not in real traffic.
    """
    folder = datasets_dir() / "snips"
    rows = zip((folder / f"{split}.seq.in").read_text().splitlines(),
               (folder / f"{split}.seq.out").read_text().splitlines(),
               (folder / f"{split}.label").read_text().splitlines())
    out = []
    for words, slots, intent in rows:
        cased = [w.capitalize() if i == 0 or (t != "O" and t[2:] in SNIPS_NAME_SLOTS) else w
                 for i, (w, t) in enumerate(zip(words.split(), slots.split()))]
        out.append((" ".join(cased), intent))
    return out


def banking77(split: str) -> list[tuple[str, str]]:
    """Banking77 customer questions as ``(text, category)``."""
    with open(datasets_dir() / "banking77" / f"{split}.csv", newline="") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


def _read_conll(path: Path, sep: str | None) -> list[TaggedSentence]:
    sentences, tokens, tags = [], [], []
    for line in path.read_text().splitlines() + [""]:
        if not line.strip():
            if tokens:
                sentences.append(TaggedSentence(tokens, tags))
            tokens, tags = [], []
            continue
        parts = line.split(sep)
        token, tag = parts[0], parts[-1]
        if token == "-DOCSTART-":
            continue
        tokens.append(token)
        tags.append(tag)
    return sentences


def conll2003(split: str) -> list[TaggedSentence]:
    """CoNLL-2003 English NER (PER, LOC, ORG, MISC) sentences; split is train, dev or test."""
    return _read_conll(datasets_dir() / "conll2003" / f"{split}.txt", None)


WNUT_TO_CONLL = {
    "person": "PER",
    "location": "LOC",
    "group": "ORG",
    "corporation": "ORG",
    "product": "MISC",
    "creative-work": "MISC",
}


def wnut17(split: str) -> list[TaggedSentence]:
    """WNUT-17 sentences with tags mapped onto the CoNLL types (person→PER, corporation→ORG, …)."""
    name = {"train": "wnut17train.conll", "dev": "emerging.dev.conll", "test": "emerging.test.annotated"}
    out = []
    for s in _read_conll(datasets_dir() / "wnut17" / name[split], "\t"):
        tags = [t if t == "O" else f"{t[:2]}{WNUT_TO_CONLL[t[2:]]}" for t in s.tags]
        out.append(TaggedSentence(s.tokens, tags))
    return out


def detokenize(tokens: list[str]) -> str:
    """Join CoNLL-style tokens back into readable text (no space before punctuation)."""
    text = ""
    for tok in tokens:
        if text and not (tok in {".", ",", ":", ";", "!", "?", ")", "'s", "n't", "%"} or text.endswith("(")):
            text += " "
        text += tok
    return text


def covid_jhu_queries() -> list[tuple[str, str]]:
    """JHU COVID user queries as ``(query, answer)``; answer identity is the FAQ class."""
    rows = json.loads((datasets_dir() / "covid_faq_jhu" / "query_answer_pairs.json").read_text())
    return [(r["question"].strip(), r["answer"]) for r in rows if r["query_type"] == "user_query"]


def _jsonl(path: Path) -> list[dict]:
    # Split on "\n" only: prompts contain U+2028, which str.splitlines() would also split on.
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]


def arena_hard() -> list[tuple[str, str]]:
    """Arena-Hard v0.1 and v2.0 prompts as ``(prompt, category)`` (hard_prompt, creative_writing, …)."""
    folder = datasets_dir() / "arena_hard"
    rows = [(r["prompt"], "hard_prompt") for r in _jsonl(folder / "arena-hard-v0.1_question.jsonl")]
    rows += [(r["prompt"], r["category"]) for r in _jsonl(folder / "arena-hard-v2.0_question.jsonl")]
    return rows


def arena_bench_v1() -> list[str]:
    """The 300 arena-bench-v1 first turns."""
    return [r["turns"][0] for r in _jsonl(datasets_dir() / "arena_bench_v1" / "question.jsonl")]


def vicuna_bench() -> list[tuple[str, str]]:
    """Vicuna-bench first turns as ``(prompt, category)``."""
    rows = _jsonl(datasets_dir() / "mt_bench" / "vicuna_bench_question.jsonl")
    return [(r["turns"][0], r["category"]) for r in rows]


def gsm8k_train() -> list[str]:
    """GSM8K training questions."""
    return [r["question"] for r in _jsonl(datasets_dir() / "gsm8k" / "train.jsonl")]


def routerdc_questions(name: str) -> list[str]:
    """Questions of a RouterDC ``split2_model7`` file, e.g. ``mmlu_train``."""
    return [r["question"] for r in json.loads((datasets_dir() / "routerdc" / f"split2_model7__{name}.json").read_text())]


def routerbench_prompts(name: str) -> list[str]:
    """Prompts of a RouterBench file, e.g. ``mbpp_train``; the CSV stores each as a one-item list literal."""
    with open(datasets_dir() / "routerdc" / f"routerbench_zs__{name}.csv", newline="") as f:
        out = []
        for r in csv.DictReader(f):
            prompt = r["prompt"]
            if prompt.startswith("['") and prompt.endswith("']"):
                prompt = prompt[2:-2]
            out.append(prompt.replace("\\n", "\n"))
        return out


def sample(rows: list, n: int, seed: int = 0) -> list:
    """Up to ``n`` rows drawn without replacement, reproducibly."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n]
