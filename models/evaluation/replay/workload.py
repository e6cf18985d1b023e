"""The workload of a replay: test rows of each slice, in the shares a mix file gives, never a row the router,
the quality heads or tier 1 were trained or calibrated on.

A mix file (``configs/replay/default.yaml``) is ``slices: {name: share}``; shares are normalised. The slices
and the recordings each stands on are :data:`SLICES`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from models.evaluation.replay.recordings import Recording, Recordings
from models.training.benchmarks import ROUTERBENCH_SUBSETS, prompt_text, routerbench_table, strip_shared_preamble
from models.training.requests.pools import load_pools, normalise_text

# Slice name -> the recordings' source it draws from.
SLICES = {"gsm8k": "routellm_gsm8k", "arc_challenge": "routerbench_arc_challenge", "mbpp": "routerbench_mbpp",
          "winogrande": "routerbench_winogrande"}


class Mix(BaseModel):
    """A replay's mix: each slice's share of the requests."""

    model_config = ConfigDict(extra="forbid")
    slices: dict[str, float]

    @field_validator("slices")
    @classmethod
    def _known_and_positive(cls, slices: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(slices) - set(SLICES))
        if unknown:
            raise ValueError(f"unknown slices {', '.join(unknown)}; slices: {', '.join(SLICES)}")
        if any(share <= 0 for share in slices.values()) or not slices:
            raise ValueError("every share must be positive, and at least one slice given")
        return slices

    @classmethod
    def load(cls, path: Path) -> "Mix":
        """Read and validate a mix file; errors name the file and the field."""
        try:
            return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{path}: {problems}") from None

    def shares(self) -> dict[str, float]:
        """The shares, normalised to sum to 1."""
        total = sum(self.slices.values())
        return {name: share / total for name, share in self.slices.items()}


@dataclass(frozen=True)
class ReplayRow:
    """One request of the workload and the recording it is graded by."""

    id: str
    slice: str
    prompt: str
    recording: Recording


def _routerbench_training_texts() -> dict[str, str]:
    """Each RouterBench prompt's key -> the text the quality heads were trained on (the subset's shared few-shot
    preamble stripped over its train and test rows, as ``models.training.quality`` reads them)."""
    texts = {}
    for subset in ROUTERBENCH_SUBSETS:
        raw = [prompt_text(r["prompt"]) for split in ("train", "test") for r in routerbench_table(subset, split)]
        texts.update(zip((normalise_text(t) for t in raw), strip_shared_preamble(raw)))
    return texts


def trained_texts() -> set[str]:
    """Every text (normalised) that the quality heads were trained or calibrated on, and every payload or prompt
    of the router's and tier 1's train and calibration requests."""
    from models.training.quality import load_quality_rows, quality_splits

    rows = load_quality_rows()
    train, calib, _ = quality_splits(rows)
    seen = {normalise_text(rows[i].text) for i in [*train, *calib]}
    return seen | load_pools("train").texts() | load_pools("calib").texts()


class Leaks:
    """Tells the prompts the models learned from: their texts, and RouterBench's as its training read them."""

    def __init__(self, trained: set[str]):
        self.trained = trained - {""}
        self._stripped = _routerbench_training_texts()

    def __contains__(self, prompt: str) -> bool:
        key = normalise_text(prompt)
        return key in self.trained or normalise_text(self._stripped.get(key, "")) in self.trained

    def held_out(self, recordings: Recordings) -> Recordings:
        """The recordings of prompts no model learned from."""
        return Recordings(r for r in recordings if r.prompt not in self)


def build_workload(mix: Mix, recordings: Recordings, requests: int, seed: int = 0) -> list[ReplayRow]:
    """``requests`` rows drawn by the mix's shares from each slice's recordings (pass the held-out ones:
    :meth:`Leaks.held_out`), without repeats while a slice has rows left, shuffled, seeded."""
    rng = random.Random(seed)
    by_source: dict[str, list[Recording]] = {}
    for recording in recordings:
        by_source.setdefault(recording.source, []).append(recording)
    shares = mix.shares()
    counts = {name: int(requests * share) for name, share in shares.items()}
    left = requests - sum(counts.values())
    for name in sorted(shares, key=lambda n: requests * shares[n] - counts[n], reverse=True)[:left]:
        counts[name] += 1
    rows = []
    for name, count in counts.items():
        pool = by_source.get(SLICES[name], [])
        if not pool and count:
            raise ValueError(f"slice {name}: no recordings of {SLICES[name]} in the data folder")
        drawn = [pool[i % len(pool)] for i in rng.sample(range(len(pool)), min(count, len(pool)))]
        drawn += [rng.choice(pool) for _ in range(count - len(drawn))]
        rows += [ReplayRow(f"{name}-{k}", name, r.prompt, r) for k, r in enumerate(drawn)]
    rng.shuffle(rows)
    return rows
