"""Writing the synthetic requests: a template filled with a payload row, label set or entity types, quoted
and listed in one of many styles, with the exact character spans of what it asks (:class:`RequestExample`).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from models.entities import PATTERNS
from models.labels import TASKS
from models.request import reader_text
from models.training import datasets as ds
from models.training.requests.pools import (
    SPLITS,
    EntityRow,
    Pools,
    humanise,
    load_pools,
)
from models.training.requests.templates import (
    BARE,
    Template,
    template_split,
    templates,
    vocabulary,
)

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
# Types no data set annotates; their gold comes from tier 1's own patterns. Earlier types win overlaps:
# an ISO date such as 1996-08-22 also fits the phone pattern.
PATTERN_TYPES = ("EMAIL", "URL", "DATE", "TIME", "MONEY", "PHONE")
_PATTERN = dict(PATTERNS)


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

















# -- payload rows -------------------------------------------------------------------------------------------








































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
class MadeRequest:
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
            if template_split()[tid] == wanted:
                self.by_mode[t.family, t.mode].append(t)
        self.rows = {name: _Rows(getattr(pools, name), rng)
                     for name in ("sentiment", "classify", "intent", "entities", "faq", "wrap", "generation",
                                  "reasoning")}

    def templates(self, family: str, mode: str) -> list[Template]:
        return self.by_mode.get((family, mode), [])

    def make(self) -> MadeRequest:
        return getattr(self, self.task)()

    def request(self, template: Template, fill: _Fill, source: str, text: str | None, *, gold: str | None = None,
                gold_index: int | None = None, gold_entities=(), label_set: str | None = None,
                courtesy: bool = True, persona_share: float = PERSONA_SHARE) -> MadeRequest:
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
        return MadeRequest(ex, text)

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

    def sentiment(self) -> MadeRequest:
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

    def classify(self) -> MadeRequest:
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
        casing = _weighted(rng, [(50, humanise), (25, lambda x: ds.capitalise(humanise(x))),
                                 (10, lambda x: humanise(x).title()), (15, str)])
        return [casing(c) for c in chosen]

    def entities(self) -> MadeRequest:
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

    def intent(self) -> MadeRequest:
        row = self.draw("intent")
        return self.request(self.pick("intent"), _Fill(row.text, self.noun(row)), row.source, row.text,
                            gold=row.label, label_set=row.label_set)

    def faq(self) -> MadeRequest:
        row = self.draw("faq")
        wrappers = self.templates("faq", "user")
        template = self.rng.choice(wrappers) if wrappers and self.rng.random() < 0.5 else _BARE_PAYLOAD
        return self.request(template, _Fill(row.text, plain_payload=True), row.source, row.text, courtesy=False,
                            persona_share=0.3)

    def generation(self) -> MadeRequest:
        rng = self.rng
        mode = _weighted(rng, [(40, "prompt"), (30, "user"), (10, "system"), (20, "standalone")])
        if mode in ("user", "system") and self.templates("generation", mode) and self.rows["wrap"]:
            row = self.draw("wrap")
            template = rng.choice(self.templates("generation", mode))
            return self.request(template, _Fill(row.text, self.noun(row)), row.source, row.text)
        if mode == "standalone" and self.templates("generation", mode):
            return self.standalone("generation")
        return self.prompt("generation", 0.45)

    def reasoning(self) -> MadeRequest:
        if self.rng.random() < 0.15 and self.templates("reasoning", "standalone"):
            return self.standalone("reasoning")
        return self.prompt("reasoning", 0.4)

    def standalone(self, family: str) -> MadeRequest:
        template = self.rng.choice(self.templates(family, "standalone"))
        return self.request(template, _Fill(), f"templates:{self.split}", None)

    def prompt(self, family: str, wrapped_share: float) -> MadeRequest:
        """A data-set prompt that is itself the request, bare or in a light wrapper."""
        row = self.draw(family)
        wrappers = self.templates(family, "prompt")
        template = self.rng.choice(wrappers) if wrappers and self.rng.random() < wrapped_share else _BARE_PROMPT
        prompt = row.text
        if template is not _BARE_PROMPT and prompt[-1:].isalnum() and "\n" not in prompt:
            prompt += "."  # "Play some jazz Thanks." reads as one run-on command
        return self.request(template, _Fill(prompt=prompt), row.source, row.text, courtesy=False)


# -- public entry points ------------------------------------------------------------------------------------


def make_requests(split: str, seed: int, per_task: dict[str, int] | None, pools: Pools | None) -> list[MadeRequest]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    counts = {**DEFAULT_COUNTS[split], **(per_task or {})}
    if unknown := set(counts) - set(TASKS):
        raise ValueError(f"unknown tasks {sorted(unknown)}")
    pools = pools if pools is not None else load_pools(split)
    made: list[MadeRequest] = []
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
    return [m.example for m in make_requests(split, seed, per_task, pools)]






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
