"""FAQ retrieval on the shared embedding: cosine similarity to every phrasing of every entry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml


@dataclass(frozen=True)
class FaqEntry:
    """One FAQ entry with all the phrasings it is matched by."""

    id: str
    question: str
    answer: str
    phrasings: tuple[str, ...]


@dataclass(frozen=True)
class FaqMatch:
    """The best entry for a query and its cosine score."""

    entry: FaqEntry
    score: float


def load_faq(path: Path) -> list[FaqEntry]:
    """Read a FAQ YAML file (``entries: [{id, question, alternatives?, answer}]``), checking its shape."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    entries = []
    for i, raw in enumerate(data.get("entries") or []):
        missing = [k for k in ("id", "question", "answer") if not raw.get(k)]
        if missing:
            raise ValueError(f"{path}: entries[{i}] lacks {', '.join(missing)}")
        phrasings = (raw["question"], *raw.get("alternatives", []))
        entries.append(FaqEntry(str(raw["id"]), raw["question"], raw["answer"], tuple(phrasings)))
    if not entries:
        raise ValueError(f"{path}: no FAQ entries")
    return entries


class FaqIndex:
    """Embedded phrasings of a FAQ; ``embed`` maps texts to L2-normalised rows (the shared encoder)."""

    def __init__(self, entries: list[FaqEntry], embed):
        self.entries = entries
        self._owner = np.array([i for i, e in enumerate(entries) for _ in e.phrasings])
        self._matrix = embed([p for e in entries for p in e.phrasings])

    @classmethod
    def from_file(cls, path: Path, encoder) -> "FaqIndex":
        """Load a FAQ file and embed its phrasings with ``encoder`` (the shared :class:`Encoder`)."""
        return cls(load_faq(path), lambda texts: encoder.encode(texts).pooled)

    def best(self, embeddings: np.ndarray) -> list[FaqMatch]:
        """Best entry for each query embedding (rows L2-normalised)."""
        sims = embeddings @ self._matrix.T
        best = sims.argmax(axis=1)
        return [FaqMatch(self.entries[self._owner[j]], float(sims[i, j])) for i, j in enumerate(best)]
