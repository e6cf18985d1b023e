"""Loaders for the public data sets in ``../shared/datasets`` (train and dev splits feed training;
test splits feed evaluation only).

The folder is a setting: ``TIERWISE_DATASETS``, else ``../shared/datasets`` beside the repository.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


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


SST5_THREE_WAY = {0: "negative", 1: "negative", 2: "neutral", 3: "positive", 4: "positive"}


def sst5(split: str) -> list[tuple[str, int]]:
    """SST-5 sentences as ``(text, 0..4)``, very negative to very positive; split is train, dev or test."""
    rows = []
    for line in (datasets_dir() / "sst2" / f"stsa.fine.{split}").read_text().splitlines():
        label, _, text = line.partition(" ")
        rows.append((text, int(label)))
    return rows


def sst5_three_way(split: str) -> list[tuple[str, str]]:
    """SST-5 folded onto three classes (0–1 negative, 2 neutral, 3–4 positive) as ``(text, class)``."""
    return [(text, SST5_THREE_WAY[label]) for text, label in sst5(split)]


def tweeteval(task: str, split: str) -> list[tuple[str, str]]:
    """TweetEval ``task`` (sentiment, emotion, irony, offensive, hate) as ``(tweet, label name)``.

    Label names are those of the task's mapping.txt (``not-offensive``, ``non_irony``, ``anger``, …). The
    sentiment train text is missing from the copy, so for sentiment "train" is the even-numbered half of
    the validation rows and "val" the odd-numbered half; test is test.
    """
    folder = datasets_dir() / "tweeteval" / task
    names = dict(line.split("\t") for line in (folder / "mapping.txt").read_text().splitlines() if line.strip())
    file_split = "val" if task == "sentiment" and split == "train" else split
    texts = (folder / f"{file_split}_text.txt").read_text().split("\n")
    labels = (folder / f"{file_split}_labels.txt").read_text().split()
    rows = [(t.strip(), names[label]) for t, label in zip(texts, labels)]
    if task == "sentiment" and split in ("train", "val"):
        rows = rows[0 if split == "train" else 1::2]
    return rows


TREC_COARSE = ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM")


def trec(split: str) -> list[tuple[str, str]]:
    """TREC questions as ``(tokenised question, coarse type)``: DESC, ENTY, ABBR, HUM, LOC or NUM.
    Split is train or test (there is no dev split)."""
    rows = []
    path = datasets_dir() / "trec_question_classification" / f"TREC.{split}.all"
    for line in path.read_text(errors="replace").splitlines():
        label, _, text = line.partition(" ")
        if text:
            rows.append((text.strip(), TREC_COARSE[int(label)]))
    return rows


def clinc150(split: str) -> list[tuple[str, str]]:
    """CLINC150 (full) as ``(text, intent)`` with out-of-scope rows labelled ``oos``."""
    data = json.loads((datasets_dir() / "clinc150" / "data_full.json").read_text())
    return [(t, i) for t, i in data[split] + data[f"oos_{split}"]]


def clinc150_domains() -> dict[str, str]:
    """CLINC150 intent → its domain (banking, credit_cards, kitchen_and_dining, …, small_talk, meta)."""
    domains = json.loads((datasets_dir() / "clinc150" / "domains.json").read_text())
    return {intent: domain for domain, intents in domains.items() for intent in intents}


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


_WNUT_FILES = {"train": "wnut17train.conll", "dev": "emerging.dev.conll", "test": "emerging.test.annotated"}


def wnut17_own_types(split: str) -> list[TaggedSentence]:
    """WNUT-17 sentences with WNUT's own tags (person, location, corporation, group, product,
    creative-work); split is train, dev or test."""
    return _read_conll(datasets_dir() / "wnut17" / _WNUT_FILES[split], "\t")


def wnut17(split: str) -> list[TaggedSentence]:
    """WNUT-17 sentences with tags mapped onto the CoNLL types (person→PER, corporation→ORG, …)."""
    out = []
    for s in wnut17_own_types(split):
        tags = [t if t == "O" else f"{t[:2]}{WNUT_TO_CONLL[t[2:]]}" for t in s.tags]
        out.append(TaggedSentence(s.tokens, tags))
    return out


# Penn-Treebank escapes (SST, TREC) and the tokens that attach to the word before or after them.
_PTB_TOKENS = {"-lrb-": "(", "-rrb-": ")", "-lsb-": "[", "-rsb-": "]", "-lcb-": "{", "-rcb-": "}",
               "``": '"', "''": '"'}
_ATTACH_LEFT = frozenset({".", ",", ":", ";", "!", "?", ")", "]", "}", "%", "...", "''",
                          "'s", "n't", "'re", "'ve", "'ll", "'d", "'m"})
_ATTACH_RIGHT = frozenset({"(", "[", "{", "``"})


def detokenize_with_offsets(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join CoNLL/PTB-style tokens into readable text, with each token's ``(start, end)`` in that text.

    No space goes before punctuation and clitics ("is n't" → "isn't") or after an opening bracket; the
    treebank escapes SST and TREC use (``-lrb-``, ``\`\```, ``''``) become the characters they stand for.
    """
    text, offsets, glue_next = "", [], False
    for tok in tokens:
        low = tok.lower()
        out = _PTB_TOKENS.get(low, tok)
        closes = low in _ATTACH_LEFT or out in (")", "]", "}") or (set(tok) <= set(".!?") and tok)
        if text and not glue_next and not closes:
            text += " "
        offsets.append((len(text), len(text) + len(out)))
        text += out
        glue_next = low in _ATTACH_RIGHT or out in ("(", "[", "{")
    return text, offsets


def detokenize(tokens: list[str]) -> str:
    """Join CoNLL-style tokens back into readable text (no space before punctuation)."""
    return detokenize_with_offsets(tokens)[0]


def capitalise(text: str) -> str:
    """The first letter upper-cased (the lower-cased corpora, CLINC and SST, as people start a sentence)."""
    return text[:1].upper() + text[1:]


def user_text(text: str) -> str:
    """A corpus sentence as a person would type it: SST's lower-cased, tokenised lines detokenised and
    capitalised; any other text unchanged."""
    return capitalise(detokenize_sst(text)) if text.islower() else text


def detokenize_sst(text: str) -> str:
    """An SST (or TREC) line as people write it: tokens joined, treebank escapes undone, the pronoun "i"
    as "I". SST is lower-cased; callers capitalise the first letter where they want a sentence."""
    return re.sub(r"(?<![\w'])i(?=['\s.,!?;:]|$)", "I", detokenize(text.split()))


def covid_jhu_queries() -> list[tuple[str, str]]:
    """JHU COVID user queries as ``(query, answer)``; answer identity is the FAQ class."""
    rows = json.loads((datasets_dir() / "covid_faq_jhu" / "query_answer_pairs.json").read_text())
    return [(r["question"].strip(), r["answer"]) for r in rows if r["query_type"] == "user_query"]


def stackfaq_queries() -> list[tuple[str, str]]:
    """StackFAQ user paraphrases as ``(query, faq_id)``; the file has no splits."""
    with open(datasets_dir() / "stackfaq" / "stackfaq_queries.csv", newline="") as f:
        return [(r["query"].strip(), r["faq_id"]) for r in csv.DictReader(f) if r["query"].strip()]


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


def gsm8k_test() -> list[str]:
    """GSM8K test questions (evaluation only)."""
    return [r["question"] for r in _jsonl(datasets_dir() / "gsm8k" / "test.jsonl")]


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


def is_calibration_row(text: str) -> bool:
    """Whether a train-split row is held out of fine-tuning for calibration (a stable 10% by text hash).

    SST-2's reported split is its dev set and Banking77 has no dev split, so their keep thresholds are
    fitted on this slice of train, which fine-tuning never sees.
    """
    return zlib.crc32(text.encode("utf-8")) % 10 == 0


def stackfaq_faq() -> tuple[str, list[tuple[str, str, str]], list[tuple[str, str]]]:
    """StackFAQ as a FAQ: its name, its entries ``(faq_id, question, answer)`` and its queries with the
    id of the entry each one asks for."""
    with open(datasets_dir() / "stackfaq" / "stackfaq_faqs.csv", newline="") as f:
        entries = [(r["faq_id"], r["question"].strip(), r["answer"].strip()) for r in csv.DictReader(f)]
    return "stackfaq", entries, stackfaq_queries()
