"""The payload rows the synthetic requests wrap: data-set texts, labels and entity spans, per split.

Rows come from the train split for ``train``, the dev/val split (or the held-out tenth of train) for
``calib`` and the test split for ``test``; train and calib rows whose text occurs in a test split are
dropped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from models.labels import WNUT_CANONICAL
from models.training import datasets as ds

SPLITS = ("train", "calib", "test")
CONLL_ANNOTATED = frozenset({"PER", "ORG", "LOC", "MISC"})
WNUT_ANNOTATED = frozenset(WNUT_CANONICAL.values())
MAX_PROMPT_CHARS = 4000


@dataclass(frozen=True)
class TextRow:
    """A payload or prompt text. ``kind`` picks the nouns that describe it (review, tweet, question,
    utterance, news); ``label`` is its class in ``label_set`` where it has one (canonical sentiment, raw
    class name otherwise)."""

    text: str
    source: str
    kind: str = "utterance"
    label: str | None = None
    label_set: str | None = None


@dataclass(frozen=True)
class EntityRow:
    """A sentence with its gold entities ``(start, end, canonical type)`` and the types its data set
    annotates (only those, and pattern types, may be asked for)."""

    text: str
    entities: tuple[tuple[int, int, str], ...]
    annotated: frozenset[str]
    source: str
    kind: str = "news"


@dataclass
class Pools:
    """The rows one split draws from, by what they feed. ``label_names`` lists every class of each
    classification label set (the distractors a request may offer)."""

    sentiment: list[TextRow]
    classify: list[TextRow]
    label_names: dict[str, tuple[str, ...]]
    intent: list[TextRow]
    entities: list[EntityRow]
    faq: list[TextRow]
    wrap: list[TextRow]
    generation: list[TextRow]
    reasoning: list[TextRow]

    def texts(self) -> set[str]:
        """Every row text, normalised."""
        rows = (self.sentiment + self.classify + self.intent + self.entities + self.faq + self.wrap
                + self.generation + self.reasoning)
        return {normalise_text(r.text) for r in rows}


def normalise_text(text: str) -> str:
    return " ".join(re.sub(r"\W+", " ", text.lower()).split())


def _fraction(key: str) -> float:
    """A stable pseudo-random number in [0, 1) for a text or id."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:12], 16) / 16 ** 12


def _hash_split(key: str) -> str:
    x = _fraction(key)
    return "train" if x < 0.6 else "calib" if x < 0.8 else "test"


def _from_train(rows: list, split: str, text=lambda r: r) -> tuple[list, str]:
    """Rows of a train file for the train or calib split: calib takes the tenth that fine-tuning holds
    out for calibration (``datasets.is_calibration_row``), train the rest."""
    if split == "calib":
        return [r for r in rows if ds.is_calibration_row(text(r))], "train-heldout"
    return [r for r in rows if not ds.is_calibration_row(text(r))], "train"


def _sst(text: str) -> str:
    return ds.capitalise(ds.detokenize_sst(text))


def _typed(text: str) -> str:
    """A lower-cased utterance (CLINC) as people type it: half keep it all lower-case, by a text hash."""
    return ds.capitalise(text) if _fraction(text) < 0.5 else text


_QUESTION_START = re.compile(
    r"^(what|what's|whats|how|who|whom|whose|where|when|why|which|is|are|am|was|were|can|could|do|does|did|will|"
    r"would|should|shall|may|might|has|have|had)\b", re.I)


def _as_question(text: str) -> str:
    """A CLINC utterance as a chat message: capitalised, "i" as "I", a "?" on questions."""
    text = re.sub(r"(?<![\w'])i(?=['\s.,!?]|$)", "I", ds.capitalise(text.strip()))
    if _QUESTION_START.match(text) and not text.endswith(("?", ".", "!")):
        text += "?"
    return text


def humanise(name: str) -> str:
    """A class name as words: card_arrival → "card arrival", AddToPlaylist → "add to playlist"."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ").lower().strip()


_CLITICS = frozenset({"s", "m", "t", "re", "ve", "ll", "d"})


_HTML_ESCAPES = {"gt": ">", "lt": "<", "amp": "&"}


def _glue_tweet_tokens(tokens: list[str], tags: list[str]) -> tuple[list[str], list[str]]:
    """Undo the WNUT-17 test file's extra splits ("@ user", "# tag", "n ' t", "it ' s", "& gt ;"), so its
    tweets read like the train file's; a glued token keeps the tag of its name part."""
    out_tokens: list[str] = []
    out_tags: list[str] = []
    i = 0
    while i < len(tokens):
        tok, tag = tokens[i], tags[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok in ("@", "#") and nxt and nxt[0].isalnum():
            out_tokens.append(tok + nxt)
            out_tags.append(tags[i + 1])
            i += 2
        elif tok == "'" and nxt in _CLITICS and out_tokens:
            if nxt == "t" and out_tokens[-1] == "n":
                out_tokens[-1] = "n't"
            elif nxt == "t" and out_tokens[-1].endswith("n"):
                out_tokens[-1] = out_tokens[-1][:-1]
                out_tokens.append("n't")
                out_tags.append("O")
            else:
                out_tokens.append("'" + nxt)
                out_tags.append("O")
            i += 2
        elif tok == "&" and nxt in _HTML_ESCAPES and i + 2 < len(tokens) and tokens[i + 2] == ";":
            out_tokens.append(_HTML_ESCAPES[nxt])
            out_tags.append("O")
            i += 3
        else:
            out_tokens.append(tok)
            out_tags.append(tag)
            i += 1
    return out_tokens, out_tags


def _entity_rows(sentences, mapping: dict[str, str], annotated: frozenset[str], source: str,
                 kind: str) -> list[EntityRow]:
    """Sentences as payload texts with entity character spans. Table rows (CoNLL sports results, mostly
    numbers) and the caret-separated WNUT forum lines make poor requests and are left out."""
    rows = []
    for s in sentences:
        tokens, tags = _glue_tweet_tokens(s.tokens, s.tags)
        numbers = sum(1 for t in tokens if re.fullmatch(r"[\d.,:-]+", t))
        if len(tokens) < 4 or numbers > 0.3 * len(tokens) or "^" in tokens:
            continue
        text, offsets = ds.detokenize_with_offsets(tokens)
        spans: list[list] = []
        open_span = False
        for (start, end), tag in zip(offsets, tags):
            if tag == "O":
                open_span = False
                continue
            prefix, kind_ = tag.split("-", 1)
            canonical = mapping.get(kind_, kind_)
            if prefix == "I" and open_span and spans[-1][2] == canonical:
                spans[-1][1] = end
            else:
                spans.append([start, end, canonical])
            open_span = True
        rows.append(EntityRow(text, tuple(tuple(x) for x in spans), annotated, source, kind))
    return rows


_FILE_SPLIT = {"train": "train", "calib": "dev", "test": "test"}


_VAL_SPLIT = {"train": "train", "calib": "val", "test": "test"}


def _read_pools(split: str) -> Pools:
    """Every row of ``split`` from the shared data-set folder (see the module docstring for the splits)."""
    fs, vs = _FILE_SPLIT[split], _VAL_SPLIT[split]
    sentiment, classify, intent, faq, wrap, generation, reasoning = [], [], [], [], [], [], []
    label_names: dict[str, tuple[str, ...]] = {}

    # SST-2's dev set is a reporting split, so calib takes the held-out tenth of its train file.
    sst2_rows, sst2_part = (ds.sst2("test"), "test") if split == "test" else _from_train(ds.sst2("train"), split,
                                                                                         lambda r: r[0])
    sst2 = [TextRow(_sst(t), f"sst2:{sst2_part}", "review", y, "sst2") for t, y in sst2_rows]
    sst5 = ds.sst5(fs)
    if split == "train":  # the rows fine-tuning holds out for calibration stay out of train here too
        sst5 = [(t, y) for t, y in sst5 if not ds.is_calibration_row(t)]
    sentiment += sst2
    sentiment += [TextRow(_sst(t), f"sst5:{fs}", "review", ds.SST5_THREE_WAY[y], "sst5_three_way") for t, y in sst5]
    # TweetEval sentiment has no train text: its loader serves the even validation rows as train and the
    # odd ones as val.
    tweet_part = {"train": "val-even", "calib": "val-odd", "test": "test"}[split]
    tweets = [TextRow(t, f"tweeteval_sentiment:{tweet_part}", "tweet", y, "tweeteval_sentiment")
              for t, y in ds.tweeteval("sentiment", vs) if t and not (split == "train" and ds.is_calibration_row(t))]
    sentiment += tweets
    if split == "train":
        reviews = [TextRow(t, "sentiment_labelled_sentences:all", "review", y, "reviews")
                   for t, y in ds.labelled_review_sentences() if not ds.is_calibration_row(t)]
        sentiment += reviews
        wrap += reviews[::3]

    clinc = ds.clinc150(vs)
    domain_of = ds.clinc150_domains()
    label_names["clinc150"] = tuple(sorted(domain_of))
    classify += [TextRow(_typed(t), f"clinc150:{vs}", "utterance", y, "clinc150") for t, y in clinc if y != "oos"]
    banking_all = ds.banking77("test" if split == "test" else "train")
    banking, banking_split = (banking_all, "test") if split == "test" else _from_train(banking_all, split,
                                                                                        lambda r: r[0])
    label_names["banking77"] = tuple(sorted({y for _, y in banking_all}))
    classify += [TextRow(t, f"banking77:{banking_split}", "question", y, "banking77") for t, y in banking]
    snips = ds.snips_cased(fs)
    label_names["snips"] = tuple(sorted({y for _, y in snips}))
    classify += [TextRow(t, f"snips:{fs}", "utterance", y, "snips") for t, y in snips]
    for task in ("emotion", "irony"):
        rows = ds.tweeteval(task, vs)
        label_names[f"tweeteval_{task}"] = tuple(sorted({y for _, y in rows}))
        classify += [TextRow(t, f"tweeteval_{task}:{vs}", "tweet", y, f"tweeteval_{task}") for t, y in rows if t]
    label_names["sst5"] = ("0", "1", "2", "3", "4")
    classify += [TextRow(_sst(t), f"sst5:{fs}", "review", str(y), "sst5") for t, y in sst5]
    if split != "train":
        trec_split = "test" if split == "test" else "train"
        label_names["trec"] = ds.TREC_COARSE
        classify += [TextRow(ds.detokenize_sst(t), f"trec:{trec_split}", "question", y, "trec")
                     for t, y in ds.trec(trec_split)]
        for task in ("offensive", "hate"):
            rows = ds.tweeteval(task, vs)
            label_names[f"tweeteval_{task}"] = tuple(sorted({y for _, y in rows}))
            classify += [TextRow(t, f"tweeteval_{task}:{vs}", "tweet", y, f"tweeteval_{task}") for t, y in rows if t]
        label_names["clinc150_domains"] = tuple(sorted(set(domain_of.values())))
        classify += [TextRow(_typed(t), f"clinc150:{vs}", "utterance", domain_of[y], "clinc150_domains")
                     for t, y in clinc if y != "oos"]

    intent += [TextRow(_typed(t), f"clinc150:{vs}", "utterance", y, "clinc150") for t, y in clinc]
    intent += [TextRow(t, f"banking77:{banking_split}", "question", y, "banking77") for t, y in banking]

    entities = _entity_rows(ds.conll2003(fs), {}, CONLL_ANNOTATED, f"conll2003:{fs}", "news")
    entities += _entity_rows(ds.wnut17_own_types(fs), WNUT_CANONICAL, WNUT_ANNOTATED, f"wnut17:{fs}", "tweet")

    faq += [TextRow(t, f"banking77:{banking_split}", "question") for t, _ in banking]
    faq += [TextRow(q, f"covid_faq_jhu:{split}", "question") for q, _ in ds.covid_jhu_queries()
            if q and _hash_split(normalise_text(q)) == split]
    faq += [TextRow(q, f"stackfaq:{split}", "question") for q, fid in ds.stackfaq_queries()
            if _hash_split(f"stackfaq-faq-{fid}") == split]

    wrap += sst2[::2] + tweets[::2]
    wrap += [TextRow(_typed(t), f"clinc150:{vs}", "utterance") for t, _ in clinc[::4]]
    wrap += [TextRow(t, f"banking77:{banking_split}", "question") for t, _ in banking[::4]]
    wrap += [TextRow(r.text, r.source, "news") for r in entities[::4] if r.kind == "news" and len(r.text) > 30]

    faq_like = {"banking", "credit_cards"}  # CLINC banking questions read as Banking77 FAQ questions
    generation += [TextRow(_as_question(t), f"clinc150:{vs}") for t, y in clinc
                   if y != "oos" and domain_of[y] not in faq_like]
    generation += [TextRow(_as_question(t), f"snips:{fs}") for t, _ in snips]
    generation += [TextRow(p.strip(), f"arena_hard:{split}") for p, c in ds.arena_hard()
                   if c == "creative_writing" and _hash_split(normalise_text(p)) == split]
    generation += [TextRow(p, f"vicuna_bench:{split}") for p, c in ds.vicuna_bench()
                   if c in ("generic", "knowledge", "roleplay", "common-sense", "counterfactual", "writing")
                   and _hash_split(normalise_text(p)) == split]
    if split == "test":
        generation += [TextRow(p, "mbpp:test") for p in ds.routerbench_prompts("mbpp_test")]
        generation += [TextRow(p.strip(), "humaneval:test") for p in ds.routerdc_questions("humaneval_test")]
    else:
        mbpp, part = _from_train(ds.routerbench_prompts("mbpp_train"), split)
        generation += [TextRow(p, f"mbpp:{part}") for p in mbpp]
        humaneval, part = _from_train(ds.routerdc_questions("humaneval_train"), split)
        generation += [TextRow(p.strip(), f"humaneval:{part}") for p in humaneval]

    if split == "test":
        reasoning += [TextRow(q, "gsm8k:test") for q in ds.gsm8k_test()]
        exam_rows = [("mmlu", "test", ds.routerdc_questions("mmlu_test")),
                     ("arc", "test", ds.routerdc_questions("arc_challenge_test") + ds.routerdc_questions("arc_easy_test"))]
    else:
        gsm, part = _from_train(ds.gsm8k_train(), split)
        reasoning += [TextRow(q, f"gsm8k:{part}") for q in gsm]
        mmlu, mmlu_part = _from_train(ds.routerdc_questions("mmlu_train"), split)
        arc, arc_part = _from_train(ds.routerdc_questions("arc_challenge_train")
                                    + ds.routerdc_questions("arc_easy_train"), split)
        exam_rows = [("mmlu", mmlu_part, mmlu), ("arc", arc_part, arc)]
    for name, part, rows in exam_rows:
        reasoning += [TextRow(_strip_qa(q), f"{name}:{part}") for q in rows]
    reasoning += [TextRow(p.strip(), f"arena_hard:{split}") for p, c in ds.arena_hard()
                  if c == "hard_prompt" and _hash_split(normalise_text(p)) == split]
    reasoning += [TextRow(p, f"vicuna_bench:{split}") for p, c in ds.vicuna_bench()
                  if c in ("fermi", "math", "coding") and _hash_split(normalise_text(p)) == split]
    generation = [r for r in generation if r.text and len(r.text) <= MAX_PROMPT_CHARS]
    reasoning = [r for r in reasoning if r.text and len(r.text) <= MAX_PROMPT_CHARS]
    return Pools(sentiment, classify, label_names, intent, entities, faq, wrap, generation, reasoning)


def _strip_qa(text: str) -> str:
    """RouterDC's ARC rows read "Question:…\\nAnswer:"; keep the question."""
    text = text.strip()
    if text.startswith("Question:"):
        text = text[len("Question:"):]
    if text.endswith("Answer:"):
        text = text[:-len("Answer:")]
    return text.strip()


@lru_cache(maxsize=None)
def load_pools(split: str) -> Pools:
    """The payload rows of ``split`` (train, calib or test), read from the data-set folder.

    Train and calib rows whose text occurs anywhere in the test pools are dropped, so that no test text
    reaches training or threshold fitting even where a data set repeats a sentence across its splits.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    pools = _read_pools(split)
    if split == "test":
        return pools
    banned = load_pools("test").texts()
    keep = lambda rows: [r for r in rows if normalise_text(r.text) not in banned]  # noqa: E731
    return Pools(keep(pools.sentiment), keep(pools.classify), pools.label_names, keep(pools.intent),
                 keep(pools.entities), keep(pools.faq), keep(pools.wrap), keep(pools.generation),
                 keep(pools.reasoning))
