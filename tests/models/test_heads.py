"""Linear heads: sklearn conversion and the file format."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from models.heads import LinearHead


def test_binary_and_multiclass_match_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    for n_classes in (2, 3):
        y = np.array([f"c{i % n_classes}" for i in range(200)])
        x_shifted = x + (np.arange(200) % n_classes)[:, None]
        clf = LogisticRegression().fit(x_shifted, y)
        head = LinearHead.from_sklearn(clf)
        np.testing.assert_allclose(head.predict_proba(x_shifted), clf.predict_proba(x_shifted), atol=1e-4)
        head.save(tmp_path / "h.npz")
        again = LinearHead.load(tmp_path / "h.npz")
        assert again.labels == tuple(clf.classes_)
        np.testing.assert_array_equal(again.weight, head.weight)
