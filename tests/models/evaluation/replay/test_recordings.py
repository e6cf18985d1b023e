"""Recorded answers: found by their prompt, per model under its canonical name, and read from the data folder."""

from __future__ import annotations

import pytest

from models.evaluation.replay.recordings import NoRecording, Recording, Recordings, load_recordings, prompt_key
from tests.support.datasets import needs_datasets

QUESTION = "Which is heavier,\n a kilo of iron or a kilo of feathers?"


def recordings() -> Recordings:
    return Recordings([
        Recording(QUESTION, "demo", {"gpt-4-1106-preview": "They weigh the same.", "mixtral-8x7b-instruct": "Iron."},
                  {"gpt-4-1106-preview": 1.0, "mixtral-8x7b-instruct": 0.0}),
        Recording("  Which is heavier, a kilo of iron   or a kilo of feathers? ", "again",
                  {"mistral-7b-instruct": "The same."}, {"mistral-7b-instruct": 1.0}),
    ])


def test_a_prompt_is_found_whatever_its_whitespace_and_repeats_are_joined():
    r = recordings()
    assert len(r) == 1
    recording = r.find("Which is heavier, a kilo of iron or a kilo of feathers?")
    assert recording.answer("mistralai/Mixtral-8x7B-Instruct-v0.1") == ("Iron.", 0.0)
    assert recording.answer("mistral-7b-chat") == ("The same.", 1.0)
    assert prompt_key(" a \n b\t c ") == "a b c"


def test_what_was_not_recorded_is_an_error_never_an_answer():
    r = recordings()
    with pytest.raises(NoRecording, match="no recording for this prompt"):
        r.find("What is the capital of France?")
    with pytest.raises(NoRecording, match="no recorded answer of claude-2"):
        r.find(QUESTION).answer("claude-2")


def test_recordings_round_trip_through_their_file(tmp_path):
    r = recordings()
    r.save(tmp_path / "r.jsonl")
    loaded = Recordings.load(tmp_path / "r.jsonl")
    assert loaded.models() == r.models() == {"gpt-4-1106-preview", "mixtral-8x7b-instruct", "mistral-7b-instruct"}
    assert loaded.find(QUESTION).answer("gpt-4-1106-preview") == ("They weigh the same.", 1.0)


@needs_datasets
def test_the_data_folder_gives_routerbench_and_gsm8k_answers_as_text():
    r = load_recordings()
    sources = {x.source for x in r}
    assert {"routellm_gsm8k", "routerbench_arc_challenge", "routerbench_mbpp", "routerbench_winogrande"} <= sources
    assert {"gpt-4-1106-preview", "mixtral-8x7b-instruct", "mistral-7b-instruct"} <= r.models()
    arc = next(x for x in r if x.source == "routerbench_arc_challenge")
    answer, score = arc.answer("gpt-4-1106-preview")
    assert not answer.startswith("['") and score in (0.0, 1.0)
    gsm8k = next(x for x in r if x.source == "routellm_gsm8k")
    assert "eggs" in gsm8k.prompt and gsm8k.answer("mixtral-8x7b-instruct")[0]
