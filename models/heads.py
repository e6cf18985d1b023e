"""Linear heads on the shared embedding, stored as small ``.npz`` files (weights, bias, labels)."""

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
    def from_sklearn(cls, clf, labels: list[str] | None = None) -> "LinearHead":
        """Convert a fitted ``LogisticRegression``; a binary model becomes two softmax columns."""
        coef, intercept = clf.coef_, clf.intercept_
        if coef.shape[0] == 1:
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        names = labels if labels is not None else [str(c) for c in clf.classes_]
        return cls(coef.T.astype(np.float32), intercept.astype(np.float32), tuple(names))

    @classmethod
    def load(cls, path: Path) -> "LinearHead":
        """Read a head written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            return cls(data["weight"], data["bias"], tuple(str(x) for x in data["labels"]))

    def save(self, path: Path) -> None:
        """Write the head as a compressed ``.npz``."""
        np.savez_compressed(path, weight=self.weight, bias=self.bias, labels=np.array(self.labels))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities for a ``[batch, dim]`` array."""
        return softmax(x @ self.weight + self.bias)
