"""Linear heads on the shared encoder's states, stored as small ``.npz`` files (weights, bias, labels)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADS_DIR = Path(__file__).resolve().parent / "heads"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class LinearHead:
    """A softmax classifier: ``probs = softmax(x @ weight + bias)``."""

    weight: np.ndarray
    bias: np.ndarray
    labels: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> "LinearHead":
        """Read a head written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            return cls(data["weight"], data["bias"], tuple(str(x) for x in data["labels"]))

    def save(self, path: Path) -> None:
        """Write the head as a compressed ``.npz``."""
        np.savez_compressed(path, weight=self.weight, bias=self.bias, labels=np.array(self.labels))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Raw scores for a ``[batch, dim]`` array."""
        return x @ self.weight + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities for a ``[batch, dim]`` array."""
        return softmax(self.logits(x))
