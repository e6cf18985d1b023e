"""Router.pii_entities: person names over the whole of long texts, in windows that fit the encoder."""

from __future__ import annotations

from models.entities import Entity
from models.router import merge_overlapping, text_windows

FILLER = "The quarterly report covers revenue, costs and the outlook for the next year. "


def test_windows_fit_the_encoder_cover_the_text_and_cut_at_whitespace(router):
    text = FILLER * 20
    windows = text_windows(router.encoder.counter, text, 40, 8)
    assert len(windows) >= router.encoder.count_tokens(text) / 40
    assert windows[0][0] == 0 and windows[-1][1] == len(text.rstrip())
    for (start, end), (next_start, next_end) in zip(windows, windows[1:]):
        assert start < next_start <= end < next_end, "each window starts inside or at the end of the one before"
        assert text[next_start - 1].isspace()
        assert router.encoder.count_tokens(text[next_start:end]) <= 8, "overlap of at most 8 pieces"
    assert all(router.encoder.count_tokens(text[start:end]) <= 40 for start, end in windows)


def test_a_run_without_whitespace_longer_than_a_window_is_cut_between_words(router):
    text = "-".join(["word"] * 60)
    windows = text_windows(router.encoder.counter, text, 16, 4)
    assert windows[0][0] == 0 and windows[-1][1] == len(text)
    assert all(router.encoder.count_tokens(text[start:end]) <= 16 for start, end in windows)


def test_no_windows_for_an_empty_text(router):
    assert text_windows(router.encoder.counter, "  \n", 16, 4) == []


def test_names_past_the_encoders_window_are_found_with_offsets_into_the_text(router):
    text = (FILLER * 12 + "Please send the signed copy to Angela Merkel before Friday. " + FILLER * 12
            + "Thanks, John Smith")
    (names,) = router.pii_entities([text])
    assert router.encoder.count_tokens(text[: text.index("Angela")]) > router.encoder.max_tokens
    assert [(n.text, n.type) for n in names] == [("Angela Merkel", "PER"), ("John Smith", "PER")]
    assert all(text[n.start:n.end] == n.text for n in names)


def test_a_name_across_a_window_edge_is_found_whole(router):
    budget = router.encoder.max_tokens - 2
    words = FILLER.split()
    for shift in range(len(words)):
        text = " ".join(words[:shift]) + " " + FILLER * 8 + "The letter is from Angela Merkel herself. " + FILLER * 8
        start = text.index("Angela")
        first_end = text_windows(router.encoder.counter, text, budget, budget // 8)[0][1]
        if start < first_end < start + len("Angela Merkel"):
            break
    else:
        raise AssertionError("no shift put the name across the first window's edge")
    (names,) = router.pii_entities([text])
    assert [n.text for n in names] == ["Angela Merkel"]


def test_texts_are_tagged_apart_and_places_are_not_names(router):
    texts = ["My name is Maria Garcia.", "", "What is the capital of France?"]
    assert [[n.text for n in names] for names in router.pii_entities(texts)] == [["Maria Garcia"], [], []]
    assert router.pii_entities([]) == []


def test_overlapping_names_are_joined():
    text = "met Maria Garcia and Bob"
    found = [Entity("Maria", "PER", 4, 9, 0.4), Entity("Maria Garcia", "PER", 4, 16, 0.9),
             Entity("Garcia", "PER", 10, 16, 0.3), Entity("Bob", "PER", 21, 24, 0.8)]
    assert merge_overlapping(text, found) == [Entity("Maria Garcia", "PER", 4, 16, 0.9),
                                              Entity("Bob", "PER", 21, 24, 0.8)]
