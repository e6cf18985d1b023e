"""Synthetic request generator: span exactness, template and payload splits, leak check, fixture.

Everything runs on tiny in-memory pools and the committed fixture; only the slow test reads the data sets.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from models.training import datasets as ds
from models.training.requests import leaks, pools, render, templates
from models.labels import TASKS
from models.request import ENTITY_TYPES
from models.training.requests.pools import EntityRow, Pools, TextRow
from models.request import reader_text
from models.labels import canonical_sentiment

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "requests_fixture.jsonl"
SMALL = {"sentiment": 150, "classify": 150, "entities": 150, "intent": 60, "faq": 60, "generation": 120,
         "reasoning": 60}


def _entity(text: str, *marked: tuple[str, str], annotated=pools.CONLL_ANNOTATED, source: str,
            kind: str = "news") -> EntityRow:
    spans, cursor = [], 0
    for word, typ in marked:
        start = text.index(word, cursor)
        spans.append((start, start + len(word), typ))
        cursor = start + len(word)
    return EntityRow(text, tuple(spans), frozenset(annotated), source, kind)


def tiny_pools(split: str) -> Pools:
    """A handful of rows of every kind; each text names its split so a mix-up shows."""
    s = split
    sentiment = [TextRow(f"I loved every minute of it ({s} {i}).", f"sst2:{s}", "review", "positive", "sst2")
                 for i in range(3)]
    sentiment += [TextRow(f"Worst service ever ({s} {i})", f"sst2:{s}", "review", "negative", "sst2")
                  for i in range(3)]
    sentiment += [TextRow(f"The game starts at 8 ({s} {i}) @user", f"tweeteval_sentiment:{s}", "tweet", "neutral",
                          "tweeteval_sentiment") for i in range(3)]
    classify = [TextRow(f"play some jazz please ({s} {i})", f"snips:{s}", "utterance", "PlayMusic", "snips")
                for i in range(3)]
    classify += [TextRow(f"will it rain in Oslo ({s} {i})?", f"snips:{s}", "utterance", "GetWeather", "snips")
                 for i in range(3)]
    classify += [TextRow(f"Oh great, another Monday ({s} {i})", f"tweeteval_irony:{s}", "tweet", "irony",
                         "tweeteval_irony") for i in range(3)]
    classify += [TextRow(f"A dull, lifeless film ({s} {i}).", f"sst5:{s}", "review", "0", "sst5") for i in range(3)]
    label_names = {"snips": ("AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook"),
                   "tweeteval_irony": ("irony", "non_irony"), "sst5": ("0", "1", "2", "3", "4")}
    intent = [TextRow(f"what is my balance ({s} {i})", f"clinc150:{s}", "utterance", "balance", "clinc150")
              for i in range(3)]
    intent += [TextRow(f"My card has not arrived yet ({s} {i})", f"banking77:{s}", "question", "card_arrival",
                       "banking77") for i in range(3)]
    entities = [_entity(f"Angela Merkel met Apple executives in Paris on 1996-08-22 ({s} {i}).",
                        ("Angela Merkel", "PER"), ("Apple", "ORG"), ("Paris", "LOC"), source=f"conll2003:{s}")
                for i in range(3)]
    entities += [_entity(f"Got the new iPhone and watched Dune with @sam_j ({s} {i}) http://t.co/x1",
                         ("iPhone", "PRODUCT"), ("Dune", "WORK"), ("@sam_j", "PER"),
                         annotated=pools.WNUT_ANNOTATED, source=f"wnut17:{s}", kind="tweet") for i in range(3)]
    entities += [_entity(f"Nothing much happened today ({s})", source=f"conll2003:{s}")]
    faq = [TextRow(f"How do I reset my PIN ({s} {i})?", f"banking77:{s}", "question") for i in range(3)]
    wrap = [TextRow(f"The food was cold and the waiter rude ({s} {i}).", f"sst2:{s}", "review") for i in range(3)]
    generation = [TextRow(f"Set an alarm for 7am ({s} {i}).", f"clinc150:{s}") for i in range(3)]
    reasoning = [TextRow(f"If 3 pens cost $6 ({s} {i}), what do 7 pens cost?", f"gsm8k:{s}") for i in range(3)]
    return Pools(sentiment, classify, label_names, intent, entities, faq, wrap, generation, reasoning)


POOLS = {s: tiny_pools(s) for s in pools.SPLITS}


@pytest.fixture(scope="module")
def built() -> dict[str, list]:
    return {s: render.make_requests(s, 0, SMALL, POOLS[s]) for s in pools.SPLITS}


def test_reader_text():
    assert reader_text("", "hi") == "hi"
    assert reader_text("Be brief.", "hi") == "Be brief.\n\nhi"


def test_template_families_are_large_and_distinct():
    by_id = templates.templates()
    per_family = Counter(t.family for t in by_id.values())
    for family in ("sentiment", "classify", "entities", "intent"):
        assert per_family[family] >= 60, per_family
    assert per_family["faq"] >= 50 and per_family["generation"] >= 80, per_family
    wordings = Counter(templates.normalise_template(t.text) for t in by_id.values())
    assert max(wordings.values()) == 1
    assert templates.normalise_template("Sentiment? {payload}") == templates.normalise_template("sentiment {payload}!")


def test_about_a_quarter_of_each_family_is_held_out():
    split = templates.template_split()
    assert split == templates.template_split()
    assert split[templates.BARE] == "train"
    for family in {t.family for t in templates.templates().values()}:
        ids = [t.id for t in templates.templates().values() if t.family == family]
        share = sum(split[i] == "test" for i in ids) / len(ids)
        assert 0.18 <= share <= 0.32, (family, share)
    groups = Counter(t.group for t in templates.templates().values())
    for group, n in groups.items():
        if n >= 4:
            assert any(split[t.id] == "test" for t in templates.templates().values() if t.group == group), group


@pytest.mark.parametrize("split", pools.SPLITS)
def test_spans_are_exact(built, split):
    pool_texts = {r.text for r in _all_rows(POOLS[split])}
    for made in built[split]:
        ex = made.example
        text = reader_text(ex.system, ex.user)
        assert ex.task in TASKS
        if ex.payload is not None:
            start, end = ex.payload
            assert text[start:end] == made.text and made.text in pool_texts
            assert ex.payload[0] >= (len(ex.system) + 2 if ex.system else 0)  # the payload is in the user message
        names = [text[s:e] for s, e in ex.labels]
        assert all(names) and all(n == n.strip() for n in names)
        if ex.task in ("sentiment", "classify") and ex.labels:
            assert ex.gold in names
        if ex.task == "classify":
            assert len(names) >= 2
        if ex.task == "sentiment":
            assert canonical_sentiment(ex.gold) is not None
        phrases = [text[s:e] for s, e in ex.etypes]
        assert all(phrases) and len(phrases) == len(ex.entity_types)
        assert set(ex.entity_types) <= set(ENTITY_TYPES)
        if ex.task == "entities":
            payload = text[ex.payload[0]:ex.payload[1]]
            assert all(entity in payload for entity, _ in ex.gold_entities)
            if ex.entity_types:
                assert {t for _, t in ex.gold_entities} <= set(ex.entity_types)
            assert ex.answer_form in ("list", "json")
        else:
            assert not ex.etypes and not ex.gold_entities
        assert ex.answer_form in ("label", "list", "json")


def test_requests_read_like_requests(built):
    examples = [m.example for s in pools.SPLITS for m in built[s]]
    with_system = [ex for ex in examples if ex.system]
    assert 0.2 < len(with_system) / len(examples) < 0.4
    instructed = [ex for ex in with_system if templates.templates().get(ex.template_id, render._BARE_PAYLOAD).mode == "system"]
    assert instructed
    for ex in instructed:  # the instruction is the system prompt; the user message is the payload alone
        assert all(end <= len(ex.system) for _, end in ex.labels + ex.etypes)
        assert len(ex.user) - (ex.payload[1] - ex.payload[0]) <= len("Utterance: ")
    entities = [ex for ex in examples if ex.task == "entities"]
    assert any(not ex.entity_types for ex in entities) and any(ex.entity_types for ex in entities)
    assert any(ex.entity_types and not ex.gold_entities for ex in entities)  # types absent from the payload
    assert any(set(ex.entity_types) & set(render.PATTERN_TYPES) for ex in entities)
    assert any(ex.answer_form == "json" for ex in examples)
    assert len({ex.template_id for ex in examples}) > 150


def test_templates_and_rows_follow_the_split(built):
    split_of = templates.template_split()
    for split, made in built.items():
        wanted = "test" if split == "test" else "train"
        for m in made:
            assert m.example.template_id == templates.BARE or split_of[m.example.template_id] == wanted
            assert m.example.source.endswith(f":{split}") or m.example.source == f"templates:{split}"
            if m.text is not None:
                assert f"({split}" in m.text
    assert sum(1 for m in built["test"] if m.example.template_id != templates.BARE) > 0.5 * len(built["test"])


def test_counts_and_determinism():
    first = render.build_requests("calib", seed=3, per_task={**{t: 0 for t in TASKS}, "intent": 20},
                                 pools=POOLS["calib"])
    again = render.build_requests("calib", seed=3, per_task={**{t: 0 for t in TASKS}, "intent": 20},
                                 pools=POOLS["calib"])
    other = render.build_requests("calib", seed=4, per_task={**{t: 0 for t in TASKS}, "intent": 20},
                                 pools=POOLS["calib"])
    assert first == again and first != other
    assert Counter(ex.task for ex in first) == {"intent": 20}
    assert {ex.gold for ex in first} <= {"balance", "card_arrival"}
    with pytest.raises(ValueError, match="split"):
        render.build_requests("dev", pools=POOLS["calib"])


def test_leak_check_passes_and_catches_a_leak():
    counts = leaks.leak_check(per_task=SMALL, pools=POOLS)
    assert counts["test_templates_in_train_calib"] == 0 and counts["test_texts_in_train_calib"] == 0
    assert counts["requests_test"] == sum(SMALL.values())
    leaky = dict(POOLS)
    leaky["train"] = tiny_pools("train")
    leaky["train"].faq = POOLS["test"].faq
    with pytest.raises(ValueError, match="leaks"):
        leaks.leak_check(per_task=SMALL, pools=leaky)
    assert leaks.leak_check(per_task=SMALL, pools=leaky, strict=False)["test_texts_in_train_calib"] > 0


def test_sentiment_words_map_onto_their_classes():
    for words in templates.vocabulary()["sentiment_labels"]:
        assert all(canonical_sentiment(word) == cls for cls, word in words.items()), words
    for name, wordings in templates.vocabulary()["label_vocab"].items():
        assert all(len(set(w.values())) == len(w) for w in wordings), name


def test_write_and_read_fixture(tmp_path):
    path = tmp_path / "requests.jsonl"
    written = render.write_fixture(path, 40, pools=POOLS["test"])
    assert render.read_fixture(path) == written
    assert {ex.task for ex in written} == set(TASKS)


def test_committed_fixture_covers_every_task():
    examples = render.read_fixture(FIXTURE)
    assert len(examples) >= 150 and {ex.task for ex in examples} == set(TASKS)
    split_of = templates.template_split()
    for ex in examples:
        assert ex.template_id == templates.BARE or split_of[ex.template_id] == "test"
        text = reader_text(ex.system, ex.user)
        for start, end in (ex.payload,) * (ex.payload is not None) + ex.labels + ex.etypes:
            assert 0 <= start < end <= len(text)
        if ex.labels and ex.task in ("sentiment", "classify"):
            assert ex.gold in [text[s:e] for s, e in ex.labels]
    assert json.loads(FIXTURE.read_text().split("\n")[0]).keys() == examples[0].to_json().keys()


def test_detokenize_sst_and_tweets():
    assert ds.detokenize_sst("i ca n't believe it 's -lrb- not -rrb- `` good '' ...") == \
        "I can't believe it's (not) \"good\"..."
    assert ds.detokenize(["it", "is", "n't", "John", "'s"]) == "it isn't John's"
    text, offsets = ds.detokenize_with_offsets(["Hello", "(", "Bob", ")", "!"])
    assert text == "Hello (Bob)!" and text[offsets[2][0]:offsets[2][1]] == "Bob"
    tokens, tags = pools._glue_tweet_tokens(["@", "Sam", "did", "n", "'", "t", "&", "gt", ";", "it", "'", "s"],
                                            ["O", "B-person", "O", "O", "O", "O", "O", "O", "O", "O", "O", "O"])
    assert tokens == ["@Sam", "did", "n't", ">", "it", "'s"] and len(tags) == len(tokens) and tags[0] == "B-person"
    assert ds.detokenize(tokens) == "@Sam didn't > it's"


def test_pattern_types():
    text = "Call +44 20 7946 0958 or mail a@b.com by 1996-08-22; score 15 7 3 5 20 18 24"
    found = [(text[s:e], kind) for s, e, kind in render._pattern_entities(text)]
    assert found == [("+44 20 7946 0958", "PHONE"), ("a@b.com", "EMAIL"), ("1996-08-22", "DATE")]


def _all_rows(pools: Pools) -> list:
    return (pools.sentiment + pools.classify + pools.intent + pools.entities + pools.faq + pools.wrap
            + pools.generation + pools.reasoning)


@pytest.mark.slow
def test_the_shared_data_sets_build_without_leaks():
    counts = leaks.leak_check()
    assert counts["test_templates_in_train_calib"] == counts["test_texts_in_train_calib"] == 0
    assert counts["unseen_label_sets_in_train"] == 0
    train = render.build_requests("train")
    assert Counter(ex.task for ex in train) == render.DEFAULT_COUNTS["train"]
    test = render.build_requests("test")
    assert {ex.label_set for ex in test} >= render.UNSEEN_LABEL_SETS
    assert random.Random(0).choice(train).template_id in templates.template_split()
