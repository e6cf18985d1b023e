"""Data-set loaders on tiny fixture files; the real folder only in the slow test."""

from __future__ import annotations

import pytest

from models import datasets as ds


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    (tmp_path / "snips").mkdir()
    (tmp_path / "snips" / "train.seq.in").write_text("play westbam on google music\n")
    (tmp_path / "snips" / "train.seq.out").write_text("O B-artist O B-service I-service\n")
    (tmp_path / "snips" / "train.label").write_text("PlayMusic\n")
    (tmp_path / "wnut17").mkdir()
    (tmp_path / "wnut17" / "wnut17train.conll").write_text("Empire\tB-location\nState\tI-location\nrocks\tO\n\n")
    (tmp_path / "conll2003").mkdir()
    (tmp_path / "conll2003" / "train.txt").write_text("-DOCSTART- O\n\nEU B-ORG\nrejects O\n\nPeter B-PER\n")
    monkeypatch.setenv("TIERWISE_DATASETS", str(tmp_path))
    return tmp_path


def test_snips_names_are_capitalised(tiny):
    assert ds.snips_cased("train") == [("Play Westbam on Google Music", "PlayMusic")]


def test_conll_and_wnut(tiny):
    conll = ds.conll2003("train")
    assert [(s.tokens, s.tags) for s in conll] == [(["EU", "rejects"], ["B-ORG", "O"]), (["Peter"], ["B-PER"])]
    (wnut,) = ds.wnut17("train")
    assert wnut.tags == ["B-LOC", "I-LOC", "O"]


def test_detokenize():
    assert ds.detokenize(["He", "said", "(", "no", ")", "and", "left", "."]) == "He said (no) and left."
    assert ds.detokenize(["it", "is", "n't", "John", "'s"]) == "it isn't John's"


def test_missing_folder_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("TIERWISE_DATASETS", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="TIERWISE_DATASETS"):
        ds.datasets_dir()


@pytest.mark.slow
def test_task_training_rows_from_the_shared_folder():
    from models.train import ACCEPTANCE_EXAMPLES, TASKS, task_dataset

    rows = task_dataset()
    counts = {t: sum(1 for _, label in rows if label == t) for t in TASKS}
    assert all(n >= 1000 for n in counts.values()), counts
    assert not {t for t, _ in rows} & set(ACCEPTANCE_EXAMPLES)
