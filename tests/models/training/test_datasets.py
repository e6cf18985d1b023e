"""Data-set loaders on tiny fixture files; the real folder only in the slow test."""

from __future__ import annotations

import pytest

from models.training import datasets as ds


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
def test_fine_tuning_rows_from_the_shared_folder():
    from models.training.finetune import TrainConfig, build_samples
    from models.labels import TASKS

    samples, labels = build_samples(TrainConfig())
    counts = {t: sum(1 for s in samples if s.classes.get("task") == i) for i, t in enumerate(TASKS)}
    assert all(n >= 1000 for n in counts.values()), counts
    assert len(labels["clinc150"]) == 151 and len(labels["banking77"]) == 77
    held_out = {ds.detokenize_sst(t).lower() for t, _ in ds.sst2("train") if ds.is_calibration_row(t)}
    assert held_out and not held_out & {s.text.lower() for s in samples}
