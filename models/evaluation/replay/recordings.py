"""Recorded answers: for each benchmark prompt, what each model answered and whether it was right.

Sources, in the data folder (``TIERWISE_DATASETS``):

- RouterBench's ARC-Challenge, MBPP and Winogrande subsets (``routerdc/routerbench_zs__*.csv``): 11 models'
  responses and 0/1 scores per prompt;
- RouteLLM's GSM8K responses (``routellm_gsm8k_mmlu/gsm8k_responses.csv``): Mixtral-8x7B and GPT-4-1106,
  with each answer's correctness.

A prompt is found by its text with whitespace collapsed, the way the gateway forwards it (the last user
message). Model names go through :func:`models.quality.canonical`, so a models file's ``mixtral-8x7b-instruct``
finds RouterBench's ``mistralai/mixtral-8x7b-chat`` and RouteLLM's ``Mixtral-8x7B-Instruct-v0.1``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from models.quality import canonical
from models.training import datasets as ds
from models.training.benchmarks import ROUTERBENCH_SUBSETS, prompt_text, routerbench_models, routerbench_table

ROUTELLM_GSM8K = {"mistralai/Mixtral-8x7B-Instruct-v0.1": "mistralai/Mixtral-8x7B-Instruct-v0.1_response",
                  "gpt-4-1106-preview": "gpt-4-1106-preview_response"}


class NoRecording(KeyError):
    """The prompt, or the model's answer to it, was never recorded."""

    def __str__(self) -> str:
        return str(self.args[0])


def prompt_key(text: str) -> str:
    """What identifies a prompt: its text with runs of whitespace made one space."""
    return " ".join(text.split())


@dataclass
class Recording:
    """One prompt: each model's recorded answer and score (1.0 right, 0.0 wrong, or a share in between)."""

    prompt: str
    source: str
    answers: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    def answer(self, model: str) -> tuple[str, float]:
        """The model's recorded answer and its score; :class:`NoRecording` when it has none."""
        name = canonical(model)
        if name not in self.answers:
            raise NoRecording(f"no recorded answer of {model} to this prompt ({self.source}); recorded models: "
                              f"{', '.join(sorted(self.answers))}")
        return self.answers[name], self.scores[name]


class Recordings:
    """Recordings by prompt, with a JSONL form so that engines in other processes read the same set."""

    def __init__(self, recordings: Iterable[Recording]):
        self._by_key: dict[str, Recording] = {}
        for recording in recordings:
            key = prompt_key(recording.prompt)
            if key in self._by_key:
                # The same prompt twice (a source repeats a question): one recording, answers joined.
                known = self._by_key[key]
                for model, text in recording.answers.items():
                    known.answers.setdefault(model, text)
                    known.scores.setdefault(model, recording.scores[model])
            else:
                self._by_key[key] = recording

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self):
        return iter(self._by_key.values())

    def find(self, prompt: str) -> Recording:
        """The recording of ``prompt``; :class:`NoRecording` when there is none."""
        recording = self._by_key.get(prompt_key(prompt))
        if recording is None:
            raise NoRecording(f"no recording for this prompt: {prompt_key(prompt)[:80]!r}")
        return recording

    def models(self) -> set[str]:
        """Every model with at least one recorded answer."""
        return {m for r in self._by_key.values() for m in r.answers}

    def save(self, path: Path) -> None:
        """Write one JSON object per recording."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            for recording in self._by_key.values():
                f.write(json.dumps(asdict(recording), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Recordings":
        """Read what :meth:`save` wrote."""
        with open(path) as f:
            return cls(Recording(**json.loads(line)) for line in f if line.strip())


def _score(value: str) -> float:
    return 1.0 if value.strip().lower() == "true" else 0.0 if value.strip().lower() == "false" else float(value)


def routerbench_recordings(split: str = "test") -> list[Recording]:
    """RouterBench's subsets: every model with both a response and a score on a prompt."""
    out = []
    for subset in ROUTERBENCH_SUBSETS:
        for row in routerbench_table(subset, split):
            recording = Recording(prompt_text(row["prompt"]), f"routerbench_{subset}")
            for model in routerbench_models(row):
                response, score = row.get(f"{model}|model_response"), row.get(model)
                if response and score not in (None, ""):
                    # Responses are stored as the repr of a list of strings, like the prompts.
                    recording.answers[canonical(model)] = prompt_text(response)
                    recording.scores[canonical(model)] = _score(score)
            if recording.answers:
                out.append(recording)
    return out


def gsm8k_recordings() -> list[Recording]:
    """RouteLLM's GSM8K test responses of Mixtral-8x7B and GPT-4-1106, with their correctness."""
    with open(ds.datasets_dir() / "routellm_gsm8k_mmlu" / "gsm8k_responses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        recording = Recording(row["prompt"], "routellm_gsm8k")
        for model, column in ROUTELLM_GSM8K.items():
            if row.get(column):
                recording.answers[canonical(model)] = row[column]
                recording.scores[canonical(model)] = _score(row[model])
        out.append(recording)
    return out


def load_recordings() -> Recordings:
    """Every recorded benchmark answer in the data folder."""
    return Recordings([*routerbench_recordings(), *gsm8k_recordings()])
