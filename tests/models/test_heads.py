"""Linear heads: the file format and the maths."""

from __future__ import annotations

import numpy as np

from models.heads import LinearHead, softmax


def test_save_load_and_probabilities(tmp_path):
    rng = np.random.default_rng(0)
    head = LinearHead(rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32),
                      ("a", "b", "c"))
    head.save(tmp_path / "h.npz")
    again = LinearHead.load(tmp_path / "h.npz")
    assert again.labels == ("a", "b", "c")
    x = rng.normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(again.logits(x), x @ head.weight + head.bias, rtol=1e-6)
    np.testing.assert_allclose(again.predict_proba(x).sum(axis=1), 1.0, rtol=1e-6)


def test_softmax_is_stable_for_large_logits():
    p = softmax(np.array([[1000.0, 0.0], [0.0, -1000.0]]))
    np.testing.assert_allclose(p, [[1.0, 0.0], [1.0, 0.0]], atol=1e-12)
