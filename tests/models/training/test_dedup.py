"""Deduplicated, grouped splits and the leak check: a planted duplicate must be caught."""

from __future__ import annotations

from models.training.dedup import Row, duplicate_clusters, group_split, leak_check, normalise

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many "
    "clips did Natalia sell altogether in April and May?",
    "Weng earns 12 dollars an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much "
    "did she earn?",
    "Which of the following is the body cavity that contains the pituitary gland? Choose among cranial, "
    "thoracic, abdominal and spinal.",
    "Write a haiku about the first snow of winter falling on a quiet mountain village at dawn.",
    "Explain the difference between a process and a thread in an operating system, with an example of each.",
    "What were the main causes of the French Revolution, and how did they interact with each other?",
]


def test_copies_across_sources_and_prefixed_copies_share_a_cluster():
    rows = [Row(q, "gsm8k") for q in QUESTIONS]
    rows += [Row(QUESTIONS[0].upper() + "  ", "routellm"),  # same text, another source
             Row("Answer the following question step by step. " + QUESTIONS[1], "routerbench"),  # prefixed copy
             Row("Second turn of the haiku conversation: make it rhyme.", "mt_bench", group="q81"),
             Row(QUESTIONS[3], "mt_bench", group="q81")]
    clusters = duplicate_clusters(rows)
    assert clusters[6] == clusters[0] and clusters[7] == clusters[1]
    assert clusters[8] == clusters[9] == clusters[3]  # a declared group, and its turn duplicating a row
    assert len({clusters[i] for i in (0, 1, 2, 3, 4, 5)}) == 6


def test_the_split_keeps_clusters_whole_and_is_deterministic():
    rows = [Row(q, "a") for q in QUESTIONS] + [Row("Please answer: " + q, "b") for q in QUESTIONS]
    train, test = group_split(rows, test_share=0.5, seed=3)
    assert sorted(train + test) == list(range(len(rows)))
    side = {i: "train" for i in train} | {i: "test" for i in test}
    assert all(side[i] == side[i + len(QUESTIONS)] for i in range(len(QUESTIONS)))
    assert group_split(rows, 0.5, seed=3) == (train, test)
    back_train, back_test = group_split(list(reversed(rows)), 0.5, seed=3)
    flipped = list(reversed(rows))
    assert {flipped[i].text for i in back_test} == {rows[i].text for i in test}  # any row order
    assert 0 < len(test) < len(rows)
    report = leak_check([rows[i].text for i in train], [rows[i].text for i in test])
    assert report.leaks == 0


def test_the_leak_check_fails_on_a_planted_duplicate():
    train, test = QUESTIONS[:3], QUESTIONS[3:]
    assert leak_check(train, test).leaks == 0
    planted = test + [QUESTIONS[0].lower(), "Context: you are a tutor. " + QUESTIONS[2]]
    report = leak_check(train, planted)
    assert report.exact == [3] and report.near == [4] and report.as_dict()["leaking_test_rows"] == 2


def test_normalise_keeps_words_only():
    assert normalise("  What's 2+2?\n") == "what s 2 2"


def test_a_shared_template_alone_is_not_a_leak():
    preamble = " ".join(f"example {i} of the shared few shot preamble that every prompt repeats" for i in range(12))
    texts = [f"{preamble} Now the question: what is {i} times {i + 7}, written out in words?" for i in range(80)]
    report = leak_check(texts[:40], texts[40:])
    assert report.leaks == 0
    assert leak_check(texts[:40], texts[40:] + [texts[3]]).exact == [40]
