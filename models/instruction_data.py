"""Synthetic chat requests: real data-set texts wrapped in natural instructions, with exact character spans.

Tier 1 must read a request as *instruction + payload*: "Is this review positive or negative? '…'" asks for
sentiment, "Translate '…' into German" wraps the very same kind of text but asks for generation. These
requests teach the multi-task encoder to read what is asked (the task, the payload span, the labels and
entity types the request names) and measure, on held-out templates and test-split texts, whether tier 1
understood. What matters is the variety of phrasings, not volume: the templates
(``models/data/instruction_templates.yaml``) vary word order, quoting, politeness, terseness and casing,
and code varies quoting styles, list styles, label wordings and system prompts on top.

Splits never mix:

* ``train``: train templates, train-split payload rows;
* ``calib``: train templates, dev/val-split rows (for thresholds);
* ``test``: held-out templates (about a quarter of each group, :func:`template_split`), test-split rows.

Data sets without a dev split (and SST-2, whose dev set is a reporting split) give calib the tenth of
their train rows that fine-tuning holds out for calibration (``datasets.is_calibration_row``; source
``<set>:train-heldout``), and train never holds a row fine-tuning holds out that way (SST, TweetEval
sentiment and review sentences included). Single-file sets (JHU COVID queries, StackFAQ by FAQ id,
Arena-Hard, Vicuna) are hash-split 60/20/20. Four label sets (TREC, TweetEval offensive and hate, CLINC
domains) never reach train, so the report can measure zero-shot classification into unseen label sets.
Train and calib rows whose text also occurs in a test split are dropped. The one template every split
shares is ``bare``: a message with no wrapper at all (a plain FAQ question or prompt), which has no
phrasing to hold out.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from models import datasets as ds
from models.entities import PATTERNS
from models.labels import TASKS, WNUT_CANONICAL
from models.request import ENTITY_TYPES, reader_text

__all__ = ["ENTITY_TYPES", "TASKS", "Pools", "RequestExample", "build_requests", "leak_check", "load_pools",
           "read_fixture", "template_split", "write_fixture"]

TEMPLATES_PATH = Path(__file__).resolve().parent / "data" / "instruction_templates.yaml"
SPLITS = ("train", "calib", "test")
TEST_SHARE = 0.25
BARE = "bare"
DEFAULT_COUNTS = {
    "train": {"sentiment": 6000, "classify": 6000, "entities": 6000, "intent": 1500, "faq": 1500,
              "generation": 5000, "reasoning": 2500},
    "calib": {"sentiment": 1500, "classify": 2000, "entities": 1500, "intent": 500, "faq": 500,
              "generation": 1500, "reasoning": 750},
    "test": {"sentiment": 1500, "classify": 2000, "entities": 1500, "intent": 500, "faq": 500,
             "generation": 1500, "reasoning": 750},
}
TIER1_ASKED = frozenset({"sentiment", "classify", "entities", "intent"})
# About 30 in 100 tier-1 requests carry a system prompt: half of them the instruction itself (the user
# message is then the payload alone), half a generic persona that does not change the task.
SYSTEM_INSTRUCTION_SHARE = 0.15
PERSONA_SHARE = 0.18  # of the requests whose instruction is in the user message
LOWER_CASE_SHARE = 0.12  # users who type everything in lower case
# Label sets kept out of train, for zero-shot classification in the report.
UNSEEN_LABEL_SETS = frozenset({"trec", "tweeteval_offensive", "tweeteval_hate", "clinc150_domains"})
CONLL_ANNOTATED = frozenset({"PER", "ORG", "LOC", "MISC"})
WNUT_ANNOTATED = frozenset(WNUT_CANONICAL.values())
# Types no data set annotates; their gold comes from tier 1's own patterns. Earlier types win overlaps:
# an ISO date such as 1996-08-22 also fits the phone pattern.
PATTERN_TYPES = ("EMAIL", "URL", "DATE", "TIME", "MONEY", "PHONE")
_PATTERN = dict(PATTERNS)
MAX_PROMPT_CHARS = 4000


@dataclass(frozen=True)
class RequestExample:
    """One synthetic chat request and what the right reading of it is.

    Spans are character offsets into ``reader_text(system, user)``. ``payload`` excludes any quotes around
    it; ``labels`` and ``etypes`` are the label names and entity-type phrases the request itself writes, in
    order (``etypes`` parallel to ``entity_types``). ``gold`` is the right label as the request writes it
    (the canonical label when the request names none); ``gold_entities`` lists ``(text, type)`` in payload
    order, restricted to the types asked for. ``answer_form`` is the form asked for: "label", "list" or
    "json" (for FAQ, generation and reasoning it is "label" and means nothing).
    """

    system: str
    user: str
    task: str
    payload: tuple[int, int] | None
    labels: tuple[tuple[int, int], ...]
    etypes: tuple[tuple[int, int], ...]
    gold: str | None
    gold_entities: tuple[tuple[str, str], ...]
    entity_types: tuple[str, ...]
    label_set: str | None
    template_id: str
    source: str
    answer_form: str

    def to_json(self) -> dict:
        """JSON-ready form (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> RequestExample:
        """The inverse of :meth:`to_json`."""
        pairs = lambda xs: tuple(tuple(x) for x in xs)  # noqa: E731
        return cls(**{**row, "payload": tuple(row["payload"]) if row["payload"] is not None else None,
                      "labels": pairs(row["labels"]), "etypes": pairs(row["etypes"]),
                      "gold_entities": pairs(row["gold_entities"]), "entity_types": tuple(row["entity_types"])})


# -- templates ----------------------------------------------------------------------------------------------

_SLOT = re.compile(r"\{\{|\}\}|\{(\w+)\}|\[\[([A-Z]+):([^\]]+)\]\]")


@dataclass(frozen=True)
class Template:
    """One template: ``family`` is the task it asks for (or "persona"), ``mode`` where its parts go."""

    id: str
    family: str
    mode: str
    text: str

    @property
    def pieces(self) -> tuple[tuple[str, ...], ...]:
        """``("lit", text)``, ``("slot", name)`` and ``("type", TYPE, phrase)`` in order."""
        return _pieces(self.text)

    @property
    def slots(self) -> frozenset[str]:
        """The ``{name}`` slots the template uses."""
        return frozenset(p[1] for p in self.pieces if p[0] == "slot")

    @property
    def fixed_types(self) -> tuple[str, ...]:
        """The entity types the template names in fixed words (``[[PER:who]]``)."""
        return tuple(p[1] for p in self.pieces if p[0] == "type")

    @property
    def group(self) -> tuple[str, str, str]:
        """The stratum the test share is drawn from: family, mode and what the template names."""
        kind = "labels" if "labels" in self.slots else "types" if "types" in self.slots or self.fixed_types else "plain"
        return self.family, self.mode, kind


@lru_cache(maxsize=None)
def _pieces(text: str) -> tuple[tuple[str, ...], ...]:
    out: list[tuple[str, ...]] = []
    pos = 0
    for m in _SLOT.finditer(text):
        if m.start() > pos:
            out.append(("lit", text[pos:m.start()]))
        if m.group(0) in ("{{", "}}"):
            out.append(("lit", m.group(0)[0]))
        elif m.group(1):
            out.append(("slot", m.group(1)))
        else:
            out.append(("type", m.group(2), m.group(3)))
        pos = m.end()
    if pos < len(text):
        out.append(("lit", text[pos:]))
    merged: list[tuple[str, ...]] = []
    for p in out:
        if p[0] == "lit" and merged and merged[-1][0] == "lit":
            merged[-1] = ("lit", merged[-1][1] + p[1])
        else:
            merged.append(p)
    return tuple(merged)


def normalise_template(text: str) -> str:
    """A template's wording without case, punctuation or spacing: two templates that differ only there
    are one template (a test template may not have such a near-copy in train)."""
    return " ".join(re.sub(r"[^\w{}\[\]]+", " ", text.lower()).split())


@lru_cache(maxsize=None)
def vocabulary() -> dict:
    """The template file: templates plus the label, type, noun and filler vocabularies."""
    return yaml.safe_load(TEMPLATES_PATH.read_text())


@lru_cache(maxsize=None)
def templates() -> dict[str, Template]:
    """Every template by id, checked for unique ids, known slots and no near-copies."""
    out: dict[str, Template] = {}
    seen: dict[str, str] = {}
    fillers = set(vocabulary()["fillers"])
    known = {"payload", "labels", "types", "noun", "Noun", "prompt"} | fillers
    for family, modes in vocabulary()["templates"].items():
        for mode, items in modes.items():
            for tid, text in items.items():
                if tid in out or tid == BARE:
                    raise ValueError(f"duplicate template id {tid}")
                t = Template(tid, family, mode, text)
                if unknown := t.slots - known:
                    raise ValueError(f"template {tid} has unknown slots {sorted(unknown)}")
                key = normalise_template(text)
                if key in seen:
                    raise ValueError(f"templates {seen[key]} and {tid} differ only by case or punctuation")
                seen[key] = tid
                out[tid] = t
    return out


@lru_cache(maxsize=None)
def _template_split() -> dict[str, str]:
    groups: dict[tuple, list[str]] = defaultdict(list)
    for t in templates().values():
        groups[t.group].append(t.id)
    split = {BARE: "train"}
    for ids in groups.values():
        ids.sort(key=lambda i: hashlib.sha1(i.encode()).hexdigest())
        n_test = round(len(ids) * TEST_SHARE) if len(ids) > 1 else 0
        for k, tid in enumerate(ids):
            split[tid] = "test" if k < n_test else "train"
    return split


def template_split() -> dict[str, str]:
    """Template id → "train" or "test": in each (family, mode, slot kind) group, the quarter of ids with
    the smallest SHA-1 is held out for test. ``bare`` (no wrapper) is listed as train; every split uses
    it."""
    return dict(_template_split())


# -- payload rows -------------------------------------------------------------------------------------------


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
        return {_norm(r.text) for r in rows}


def _norm(text: str) -> str:
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


def _humanise(name: str) -> str:
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
            if q and _hash_split(_norm(q)) == split]
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
                   if c == "creative_writing" and _hash_split(_norm(p)) == split]
    generation += [TextRow(p, f"vicuna_bench:{split}") for p, c in ds.vicuna_bench()
                   if c in ("generic", "knowledge", "roleplay", "common-sense", "counterfactual", "writing")
                   and _hash_split(_norm(p)) == split]
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
                  if c == "hard_prompt" and _hash_split(_norm(p)) == split]
    reasoning += [TextRow(p, f"vicuna_bench:{split}") for p, c in ds.vicuna_bench()
                  if c in ("fermi", "math", "coding") and _hash_split(_norm(p)) == split]
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
    keep = lambda rows: [r for r in rows if _norm(r.text) not in banned]  # noqa: E731
    return Pools(keep(pools.sentiment), keep(pools.classify), pools.label_names, keep(pools.intent),
                 keep(pools.entities), keep(pools.faq), keep(pools.wrap), keep(pools.generation),
                 keep(pools.reasoning))


# -- writing one message ------------------------------------------------------------------------------------


class _Writer:
    """One message built piece by piece, remembering where the payload, labels and types land.

    With ``lower`` set (a user who types in lower case) every instruction word, label and type phrase is
    lower-cased; the payload and data-set prompts never are.
    """

    def __init__(self, lower: bool = False):
        self.text = ""
        self.lower = lower
        self.payload: tuple[int, int] | None = None
        self.labels: list[tuple[int, int]] = []
        self.etypes: list[tuple[int, int]] = []
        self.etype_names: list[str] = []
        self.instruction = ""  # the instruction words alone, to read the asked answer form from

    def put(self, s: str, verbatim: bool = False) -> tuple[int, int]:
        """Append ``s``; returns its span."""
        if not verbatim:
            s = s.lower() if self.lower else s
            self.instruction += s
        start = len(self.text)
        self.text += s
        return start, len(self.text)


def _weighted(rng: random.Random, options: list[tuple]):
    """The value of one ``(weight, value)`` option, drawn by weight."""
    return rng.choices([o[1] for o in options], [o[0] for o in options])[0]


# (weight, (opening, closing)); the payload goes between.
_INLINE_QUOTES = [(20, ("", "")), (18, ("'", "'")), (30, ('"', '"')), (14, ("\u201c", "\u201d")),
                  (4, ("\u00ab", "\u00bb")), (5, ("\u2018", "\u2019")), (3, ("`", "`")), (6, ('"""', '"""'))]
_BLOCK_QUOTES = [(45, ("", "")), (15, ("{Noun}: ", "")), (5, ("Text: ", "")), (9, ('"', '"')),
                 (4, ("\u201c", "\u201d")), (5, ('"""\n', '\n"""')), (8, ("```\n", "\n```")), (4, ("- ", "")),
                 (5, ("> ", ""))]


def _put_payload(w: _Writer, payload: str, noun: str, after: str, rng: random.Random, plain: bool) -> None:
    """The payload, quoted in a style that fits where it stands: inside a sentence it is usually quoted;
    on its own line it may also be fenced, bulleted or introduced ("Review: …"). ``plain``: never quoted
    (a user's own question)."""
    opening, closing = "", ""
    ends_line = after == "" or after.startswith("\n")
    if not plain:
        if w.text.endswith(": ") and ends_line and rng.random() < 0.3:
            w.text = w.text[:-1] + rng.choice(["\n", "\n\n"])
        at_line_start = w.text == "" or w.text.endswith("\n")
        styles = _BLOCK_QUOTES if at_line_start and ends_line else _INLINE_QUOTES
        if w.text.rstrip("\n").endswith(":"):  # "Review:\n" is introduced already
            styles = [s for s in styles if not s[1][0].endswith(("{Noun}: ", "Text: ", "- ", "> "))]
        opening, closing = _weighted(rng, styles)
        opening = opening.replace("{Noun}", ds.capitalise(noun))
    w.put(opening)
    w.payload = w.put(payload, verbatim=True)
    w.put(closing)


_LINE_BULLETS = ["- ", "* ", "\u2022 ", "{n}. ", "{n}) ", ""]
_INLINE_LISTS = [(30, "word"), (10, "oxford"), (12, "comma"), (10, "slash"), (4, "spaced_slash"), (5, "pipe"),
                 (5, "semicolon"), (6, "quoted"), (4, "bracket")]
_SEPARATORS = {"comma": ", ", "slash": "/", "spaced_slash": " / ", "pipe": " | ", "semicolon": "; ", "bracket": ", "}


def _put_list(w: _Writer, items: list[str], after: str, rng: random.Random, joiner: str) -> list[tuple[int, int]]:
    """Label names or type phrases as a list: bulleted or numbered on their own lines where the template
    gives them lines, else inline ("a, b or c", "a, b, or c", "a/b/c", "a | b", "'a' or 'b'", "[a, b]").
    Returns each item's span."""
    spans = []
    if w.text.endswith("\n") and (after == "" or after.startswith("\n")):
        bullet = rng.choice(_LINE_BULLETS)
        for k, item in enumerate(items, 1):
            w.put(("\n" if k > 1 else "") + bullet.replace("{n}", str(k)))
            spans.append(w.put(item))
        return spans
    style = _weighted(rng, _INLINE_LISTS)
    quote = rng.choice(["'", '"']) if style == "quoted" else ""
    if style == "bracket":
        w.put("[")
    for k, item in enumerate(items):
        if k and style in ("word", "oxford", "quoted") and k == len(items) - 1:
            w.put(("," if style == "oxford" and len(items) > 2 else "") + f" {joiner} ")
        elif k:
            w.put(_SEPARATORS.get(style, ", "))
        w.put(quote)
        spans.append(w.put(item))
        w.put(quote)
    if style == "bracket":
        w.put("]")
    return spans


@dataclass
class _Fill:
    """What one rendering puts into a template's slots."""

    payload: str | None = None
    noun: str = "text"
    labels: list[str] | None = None
    types: list[str] | None = None
    prompt: str | None = None
    plain_payload: bool = False


def _render(template: Template, fill: _Fill, w: _Writer, rng: random.Random) -> None:
    vocab = vocabulary()
    pieces = template.pieces
    for i, piece in enumerate(pieces):
        after = pieces[i + 1][1] if i + 1 < len(pieces) and pieces[i + 1][0] == "lit" else ""
        if piece[0] == "lit":
            w.put(piece[1])
        elif piece[0] == "type":
            w.etypes.append(w.put(piece[2]))
            w.etype_names.append(piece[1])
        elif piece[1] == "payload":
            _put_payload(w, fill.payload, fill.noun, after, rng, fill.plain_payload)
        elif piece[1] == "labels":
            w.labels += _put_list(w, fill.labels, after, rng, "or")
        elif piece[1] == "types":
            phrases = [rng.choice(vocab["type_phrases"][t]) for t in fill.types]
            w.etypes += _put_list(w, phrases, after, rng, rng.choice(["and", "and", "or", "&"]))
            w.etype_names += fill.types
        elif piece[1] == "noun":
            w.put(fill.noun)
        elif piece[1] == "Noun":
            w.put(ds.capitalise(fill.noun))
        elif piece[1] == "prompt":
            w.put(fill.prompt, verbatim=True)
        else:
            w.put(rng.choice(vocab["fillers"][piece[1]]))


# -- one request per task -----------------------------------------------------------------------------------


class _Rows:
    """Draws rows of one pool: a group (label set or data set) with weight the square root of its size
    (capped at 4,000 rows), so small sets are seen without being repeated to death and no big set
    swamps the rest; within a group no row repeats before all were used."""

    def __init__(self, rows: list, rng: random.Random):
        groups: dict[str, list] = defaultdict(list)
        for r in rows:
            groups[getattr(r, "label_set", None) or r.source.split(":")[0]].append(r)
        self.rng = rng
        self.names = sorted(groups)
        self.weights = [math.sqrt(min(len(groups[g]), 4000)) for g in self.names]
        self.groups = dict(groups)
        self.queues: dict[str, list] = {g: [] for g in self.names}

    def __bool__(self) -> bool:
        return bool(self.names)

    def draw(self, accept=None, tries: int = 50):
        """A row that ``accept`` takes (any row without it); None if ``tries`` draws found none."""
        if not self.names:
            return None
        for _ in range(tries):
            group = self.rng.choices(self.names, self.weights)[0]
            if not self.queues[group]:
                self.queues[group] = list(self.groups[group])
                self.rng.shuffle(self.queues[group])
            row = self.queues[group].pop()
            if accept is None or accept(row):
                return row
        return None


def _pattern_entities(text: str) -> list[tuple[int, int, str]]:
    """Pattern-type entities of a text, earlier types in PATTERN_TYPES winning overlaps. A "phone number"
    of more than four space-separated groups is a row of a results table (CoNLL sports pages), not one."""
    found: list[tuple[int, int, str]] = []
    for kind in PATTERN_TYPES:
        for m in _PATTERN[kind].finditer(text):
            if kind == "PHONE" and m.group(0).count(" ") > 3:
                continue
            if not any(m.start() < e and s < m.end() for s, e, _ in found):
                found.append((m.start(), m.end(), kind))
    return sorted(found)


_BARE_PAYLOAD = Template(BARE, "faq", "user", "{payload}")
_BARE_PROMPT = Template(BARE, "generation", "prompt", "{prompt}")


@dataclass
class _Made:
    """A request and the data-set text it was made from (None for a standalone template)."""

    example: RequestExample
    text: str | None


class _Maker:
    """Makes the requests of one task in one split."""

    def __init__(self, task: str, pools: Pools, rng: random.Random, split: str):
        self.task, self.pools, self.rng, self.split = task, pools, rng, split
        wanted = "test" if split == "test" else "train"
        self.by_mode: dict[tuple[str, str], list[Template]] = defaultdict(list)
        for tid, t in templates().items():
            if _template_split()[tid] == wanted:
                self.by_mode[t.family, t.mode].append(t)
        self.rows = {name: _Rows(getattr(pools, name), rng)
                     for name in ("sentiment", "classify", "intent", "entities", "faq", "wrap", "generation",
                                  "reasoning")}

    def templates(self, family: str, mode: str) -> list[Template]:
        return self.by_mode.get((family, mode), [])

    def make(self) -> _Made:
        return getattr(self, self.task)()

    def request(self, template: Template, fill: _Fill, source: str, text: str | None, *, gold: str | None = None,
                gold_index: int | None = None, gold_entities=(), label_set: str | None = None,
                courtesy: bool = True, persona_share: float = PERSONA_SHARE) -> _Made:
        """Render ``template`` into a request: system prompt (the instruction itself, a generic persona or
        none), lower-case typing, politeness, an answer-format request, a dropped final "?"; then the spans
        in reader-text offsets. ``gold_index``: the gold is the label written at that position."""
        rng, vocab = self.rng, vocabulary()
        system_w: _Writer | None = None
        if template.mode == "system":
            system_w = instr = _Writer()
            _render(template, fill, system_w, rng)
            user_w = _Writer()
            _put_payload(user_w, fill.payload, fill.noun, "", rng, False)
        else:
            personas = self.templates("persona", "system")
            if personas and rng.random() < persona_share:
                system_w = _Writer()
                system_w.put(rng.choice(personas).text)
            user_w = instr = _Writer(lower=rng.random() < LOWER_CASE_SHARE)
            if courtesy and rng.random() < 0.1:
                user_w.put(rng.choice(vocab["courtesy"]["prefix"]))
            _render(template, fill, user_w, rng)
        form = "json" if re.search(r"\bjson\b", instr.instruction, re.I) else (
            "list" if self.task == "entities" else "label")
        if self.task in TIER1_ASKED and form != "json" and rng.random() < 0.15:
            form = "json" if rng.random() < 0.35 else form
            instr.put(("\n" if "\n" in instr.text else " ") + rng.choice(vocab["answer_suffixes"][form]))
        if template.mode != "system":
            if courtesy and rng.random() < 0.1:
                user_w.put(rng.choice(vocab["courtesy"]["suffix"]))
            ends_in_words = user_w.payload is None or user_w.payload[1] < len(user_w.text)
            if ends_in_words and user_w.text.endswith(("?", ".")) and rng.random() < 0.1:
                user_w.text = user_w.text[:-1]
        system = system_w.text if system_w is not None else ""
        user_shift = len(system) + 2 if system else 0
        instr_shift = 0 if instr is system_w else user_shift
        move = lambda spans, by: tuple((s + by, e + by) for s, e in spans)  # noqa: E731
        labels = move(instr.labels, instr_shift)
        if gold_index is not None:
            start, end = labels[gold_index]
            gold = reader_text(system, user_w.text)[start:end]
        ex = RequestExample(
            system=system, user=user_w.text, task=self.task,
            payload=move([user_w.payload], user_shift)[0] if user_w.payload else None,
            labels=labels, etypes=move(instr.etypes, instr_shift), gold=gold,
            gold_entities=tuple(gold_entities), entity_types=tuple(instr.etype_names), label_set=label_set,
            template_id=template.id, source=source, answer_form=form if self.task in TIER1_ASKED else "label")
        return _Made(ex, text)

    def pick(self, family: str) -> Template:
        """A template of ``family``, with the instruction in the system prompt for about 15 in 100."""
        system = self.templates(family, "system")
        if system and self.rng.random() < SYSTEM_INSTRUCTION_SHARE:
            return self.rng.choice(system)
        return self.rng.choice(self.templates(family, "user"))

    def noun(self, row) -> str:
        return self.rng.choice(vocabulary()["nouns"][row.kind])

    def draw(self, pool: str, accept=None):
        row = self.rows[pool].draw(accept)
        if row is None:
            raise ValueError(f"no {pool} rows for {self.task} requests in the {self.split} split")
        return row

    # -- the tasks --

    def sentiment(self) -> _Made:
        rng = self.rng
        row = self.draw("sentiment")
        template = self.pick("sentiment")
        fill = _Fill(row.text, self.noun(row))
        if "labels" not in template.slots:
            return self.request(template, fill, row.source, row.text, gold=row.label, label_set=row.label_set)
        words = rng.choice([v for v in vocabulary()["sentiment_labels"] if row.label in v])
        casing = _weighted(rng, [(65, str), (25, ds.capitalise), (10, str.upper)])
        order = list(words)
        if rng.random() < 0.4:
            rng.shuffle(order)
        fill.labels = [casing(words[c]) for c in order]
        return self.request(template, fill, row.source, row.text, gold_index=order.index(row.label),
                            label_set=row.label_set)

    def classify(self) -> _Made:
        rng = self.rng
        row = self.draw("classify")
        template = self.pick("classify")
        names = list(self.pools.label_names[row.label_set])
        if row.label_set == "sst5" or len(names) == 2:
            chosen = names if rng.random() < 0.6 else names[::-1]
        else:
            k = rng.randint(2, min(6, len(names)))
            chosen = rng.sample([n for n in names if n != row.label], k - 1) + [row.label]
            rng.shuffle(chosen)
        fill = _Fill(row.text, self.noun(row), labels=self.label_words(row.label_set, chosen))
        return self.request(template, fill, row.source, row.text, gold_index=chosen.index(row.label),
                            label_set=row.label_set)

    def label_words(self, label_set: str, chosen: list[str]) -> list[str]:
        """How this request writes the class names: a wording from the vocabulary for small sets, the
        humanised name (sometimes Title Case or the raw name) for CLINC, Banking77 and SNIPS."""
        rng = self.rng
        vocab = vocabulary()["label_vocab"]
        if label_set in vocab:
            words = rng.choice(vocab[label_set])
            casing = _weighted(rng, [(60, str), (30, ds.capitalise), (10, str.title)])
            return [casing(words[c]) for c in chosen]
        casing = _weighted(rng, [(50, _humanise), (25, lambda x: ds.capitalise(_humanise(x))),
                                 (10, lambda x: _humanise(x).title()), (15, str)])
        return [casing(c) for c in chosen]

    def entities(self) -> _Made:
        rng = self.rng
        for _ in range(20):
            template = self.pick("entities")
            fixed = set(template.fixed_types)
            with_entities = rng.random() < 0.85
            row = self.rows["entities"].draw(
                lambda r: fixed <= r.annotated | set(PATTERN_TYPES) and (bool(r.entities) or not with_entities))
            if row is not None:
                break
        else:
            raise ValueError(f"no entity rows fit the entity templates in the {self.split} split")
        types = self.entity_types(row) if "types" in template.slots else []
        asked = set(types) | fixed
        found = [e for e in row.entities if not asked or e[2] in asked]
        if asked & set(PATTERN_TYPES):
            found += [e for e in _pattern_entities(row.text)
                      if e[2] in asked and not any(e[0] < b and a < e[1] for a, b, _ in found)]
        gold = tuple((row.text[s:e], t) for s, e, t in sorted(found))
        fill = _Fill(row.text, self.noun(row), types=types)
        return self.request(template, fill, row.source, row.text, gold_entities=gold)

    def entity_types(self, row: EntityRow) -> list[str]:
        """Types to ask for: mostly ones the sentence has, sometimes ones it lacks (gold then empty),
        sometimes a pattern type (dates, e-mail addresses, …)."""
        rng = self.rng
        present = list(dict.fromkeys(t for _, _, t in row.entities))
        r = rng.random()
        if r < 0.6 and present:
            types = rng.sample(present, min(len(present), rng.choice([1, 1, 2])))
            absent = sorted(row.annotated - set(types))
            if absent and rng.random() < 0.25:
                types.append(rng.choice(absent))
        elif r < 0.85:
            types = rng.sample(sorted(row.annotated), rng.choice([1, 1, 2, 3]))
        else:
            hits = list(dict.fromkeys(t for _, _, t in _pattern_entities(row.text)))
            types = [rng.choice(hits) if hits and rng.random() < 0.7 else rng.choice(PATTERN_TYPES)]
            if rng.random() < 0.4:
                types.append(rng.choice(sorted(row.annotated)))
        return types

    def intent(self) -> _Made:
        row = self.draw("intent")
        return self.request(self.pick("intent"), _Fill(row.text, self.noun(row)), row.source, row.text,
                            gold=row.label, label_set=row.label_set)

    def faq(self) -> _Made:
        row = self.draw("faq")
        wrappers = self.templates("faq", "user")
        template = self.rng.choice(wrappers) if wrappers and self.rng.random() < 0.5 else _BARE_PAYLOAD
        return self.request(template, _Fill(row.text, plain_payload=True), row.source, row.text, courtesy=False,
                            persona_share=0.3)

    def generation(self) -> _Made:
        rng = self.rng
        mode = _weighted(rng, [(40, "prompt"), (30, "user"), (10, "system"), (20, "standalone")])
        if mode in ("user", "system") and self.templates("generation", mode) and self.rows["wrap"]:
            row = self.draw("wrap")
            template = rng.choice(self.templates("generation", mode))
            return self.request(template, _Fill(row.text, self.noun(row)), row.source, row.text)
        if mode == "standalone" and self.templates("generation", mode):
            return self.standalone("generation")
        return self.prompt("generation", 0.45)

    def reasoning(self) -> _Made:
        if self.rng.random() < 0.15 and self.templates("reasoning", "standalone"):
            return self.standalone("reasoning")
        return self.prompt("reasoning", 0.4)

    def standalone(self, family: str) -> _Made:
        template = self.rng.choice(self.templates(family, "standalone"))
        return self.request(template, _Fill(), f"templates:{self.split}", None)

    def prompt(self, family: str, wrapped_share: float) -> _Made:
        """A data-set prompt that is itself the request, bare or in a light wrapper."""
        row = self.draw(family)
        wrappers = self.templates(family, "prompt")
        template = self.rng.choice(wrappers) if wrappers and self.rng.random() < wrapped_share else _BARE_PROMPT
        prompt = row.text
        if template is not _BARE_PROMPT and prompt[-1:].isalnum() and "\n" not in prompt:
            prompt += "."  # "Play some jazz Thanks." reads as one run-on command
        return self.request(template, _Fill(prompt=prompt), row.source, row.text, courtesy=False)


# -- public entry points ------------------------------------------------------------------------------------


def _build(split: str, seed: int, per_task: dict[str, int] | None, pools: Pools | None) -> list[_Made]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    counts = {**DEFAULT_COUNTS[split], **(per_task or {})}
    if unknown := set(counts) - set(TASKS):
        raise ValueError(f"unknown tasks {sorted(unknown)}")
    pools = pools if pools is not None else load_pools(split)
    made: list[_Made] = []
    for task in TASKS:
        # One generator per task: a task's requests do not change when another task's count does.
        maker = _Maker(task, pools, random.Random(f"{seed}/{split}/{task}"), split)
        made += [maker.make() for _ in range(counts.get(task, 0))]
    random.Random(f"{seed}/{split}/order").shuffle(made)
    return made


def build_requests(split: str, seed: int = 0, per_task: dict[str, int] | None = None,
                   pools: Pools | None = None) -> list[RequestExample]:
    """Synthetic requests of one split, shuffled, deterministic for a given seed.

    ``split``: "train" (train templates, train-split payloads), "calib" (train templates, dev/val-split
    payloads: for fitting thresholds) or "test" (held-out templates, test-split payloads: for the report).
    ``per_task`` overrides the number of requests per task (defaults in ``DEFAULT_COUNTS``). ``pools``
    replaces the rows read from the data-set folder (tests pass small in-memory pools).
    """
    return [m.example for m in _build(split, seed, per_task, pools)]


def _source_text(made: _Made) -> str | None:
    return _norm(made.text) if made.text is not None else None


def leak_check(seed: int = 0, per_task: dict[str, int] | None = None, pools: dict[str, Pools] | None = None,
               strict: bool = True) -> dict[str, int]:
    """Build all three splits and count what test material reaches train or calib: test template ids, and
    train/calib requests made from a text that is in the test pools (payloads and prompts alike). Raises
    ValueError on any leak when ``strict``; returns the counts (for the report)."""
    built = {s: _build(s, seed, per_task, pools[s] if pools else None) for s in SPLITS}
    split_of = _template_split()
    test_ids = {tid for tid, s in split_of.items() if s == "test"}
    fitted = built["train"] + built["calib"]
    test_texts = (pools["test"] if pools else load_pools("test")).texts()
    counts = {
        "requests_train": len(built["train"]),
        "requests_calib": len(built["calib"]),
        "requests_test": len(built["test"]),
        "templates_train": sum(1 for tid, s in split_of.items() if s == "train" and tid != BARE),
        "templates_test": len(test_ids),
        "test_templates_in_train_calib": len({m.example.template_id for m in fitted} & test_ids),
        "test_texts_in_train_calib": sum(1 for m in fitted if _source_text(m) in test_texts),
        "train_templates_in_test": sum(1 for m in built["test"]
                                       if m.example.template_id != BARE and m.example.template_id not in test_ids),
        "unseen_label_sets_in_train": sum(1 for m in built["train"] if m.example.label_set in UNSEEN_LABEL_SETS),
    }
    leaks = {k: v for k, v in counts.items() if k.endswith(("_in_train_calib", "_in_test", "_in_train")) and v}
    if strict and leaks:
        raise ValueError(f"test material leaks into train/calib: {leaks}")
    return counts


def _fixture_counts(n: int) -> dict[str, int]:
    shares = {"sentiment": 0.2, "classify": 0.22, "entities": 0.2, "intent": 0.08, "faq": 0.08,
              "generation": 0.14, "reasoning": 0.08}
    counts = {t: max(1, int(n * s)) for t, s in shares.items()}
    counts["classify"] += n - sum(counts.values())
    return counts


def write_fixture(path: str | Path, n: int = 200, seed: int = 0, pools: Pools | None = None) -> list[RequestExample]:
    """Write ``n`` test-split requests covering every task as JSON lines (all fields), for tests that must
    not read the data-set folder; returns them."""
    examples = build_requests("test", seed, _fixture_counts(n), pools)
    Path(path).write_text("".join(json.dumps(ex.to_json(), ensure_ascii=False) + "\n" for ex in examples))
    return examples


def read_fixture(path: str | Path) -> list[RequestExample]:
    """The requests of a file written by :func:`write_fixture`."""
    return [RequestExample.from_json(json.loads(line)) for line in Path(path).read_text().split("\n") if line]
