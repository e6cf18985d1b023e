"""The FAQ index: best match with its phrasing, and reloading its file on change (a deterministic embedding
stands in for the encoder)."""

from __future__ import annotations

import hashlib
import logging
import os
import re

import numpy as np
import pytest

from models.faq import FaqIndex, load_faq

DIM = 64


def embed(texts: list[str]) -> np.ndarray:
    """Bag of hashed words, L2-normalised: texts sharing words score high, as with the real encoder."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            out[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIM] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


FAQ_V1 = """entries:
  - id: returns
    question: What is your return policy?
    alternatives: ["How do returns work?"]
    answer: 30 days.
  - id: shipping
    question: How long does shipping take?
    answer: 3-5 days.
"""
FAQ_V2 = FAQ_V1 + """  - id: warranty
    question: Is there a warranty on products?
    answer: Two years.
"""


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def faq_file(tmp_path):
    path = tmp_path / "faq.yaml"
    path.write_text(FAQ_V1)
    return path


def rewrite(path, text: str, bump_s: int) -> None:
    """Write ``text`` and move the mtime on, so the change shows whatever the file system's granularity."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump_s * 1_000_000_000))


def query(index: FaqIndex, text: str):
    (match,) = index.best(embed([text]))
    return match


def test_best_match_names_the_phrasing(faq_file):
    index = FaqIndex.from_path(faq_file, embed)
    match = query(index, "how do returns work")
    assert match.entry.id == "returns" and match.phrasing == "How do returns work?"
    assert match.score == pytest.approx(1.0, abs=1e-5)
    assert query(index, "what is the return policy").phrasing == "What is your return policy?"


def test_index_without_a_path_never_reloads(faq_file):
    index = FaqIndex(load_faq(faq_file), embed, check_interval_s=0)
    rewrite(faq_file, FAQ_V2, 1)
    assert not index.reload_if_changed()
    assert len(index.best(embed(["a", "b"]))) == 2


def test_reloads_on_change_at_most_once_per_interval(faq_file):
    clock = Clock()
    index = FaqIndex.from_path(faq_file, embed, clock=clock)
    assert [e.id for e in index.entries] == ["returns", "shipping"]
    rewrite(faq_file, FAQ_V2, 1)
    # Within the interval the file is not looked at.
    clock.now += 0.5
    assert query(index, "is there a warranty on products").entry.id != "warranty"
    clock.now += 0.6
    match = query(index, "is there a warranty on products")
    assert (match.entry.id, match.entry.answer) == ("warranty", "Two years.")
    assert [e.id for e in index.entries] == ["returns", "shipping", "warranty"]
    # Unchanged since: nothing to do.
    clock.now += 5
    assert not index.reload_if_changed()


def test_a_bad_file_keeps_the_old_index_and_logs(faq_file, caplog):
    clock = Clock()
    index = FaqIndex.from_path(faq_file, embed, clock=clock)
    before = index.entries
    rewrite(faq_file, "entries:\n  - id: broken\n    question: no answer here\n", 1)
    clock.now += 2
    with caplog.at_level(logging.ERROR, logger="models.faq"):
        assert not index.reload_if_changed()
    assert index.entries is before
    assert "reload failed" in caplog.text and "lacks answer" in caplog.text
    # The same broken version is not retried (nor logged) every second...
    caplog.clear()
    clock.now += 2
    assert not index.reload_if_changed()
    assert caplog.text == ""
    # ...and a fixed file goes into service.
    rewrite(faq_file, FAQ_V2, 2)
    clock.now += 2
    assert index.reload_if_changed()
    assert query(index, "warranty on products").entry.id == "warranty"


@pytest.mark.parametrize("text,error", [
    ("", "no FAQ entries"),
    ("- just a list\n", "top level"),
    ("entries:\n  - id: a\n    question: q\n    answer: x\n  - id: a\n    question: r\n    answer: y\n", "repeats"),
    ("entries:\n  - id: a\n    question: q\n    answer: x\n    alternatives: oops\n", "alternatives"),
    ("entries: [unclosed\n", None),
])
def test_a_deleted_or_invalid_file_keeps_the_old_index(faq_file, text, error, caplog):
    clock = Clock()
    index = FaqIndex.from_path(faq_file, embed, clock=clock)
    rewrite(faq_file, text, 1)
    clock.now += 2
    with caplog.at_level(logging.ERROR, logger="models.faq"):
        assert not index.reload_if_changed()
    assert [e.id for e in index.entries] == ["returns", "shipping"]
    if error:
        assert error in caplog.text
    faq_file.unlink()
    clock.now += 2
    assert not index.reload_if_changed()
    assert query(index, "how do returns work").entry.id == "returns"


def test_the_sample_faq_loads():
    from serve.settings import REPO_ROOT

    entries = load_faq(REPO_ROOT / "configs" / "faq.yaml")
    assert len({e.id for e in entries}) == len(entries) >= 10
