"""The int8 encoder artefact built by `make setup`."""

from __future__ import annotations

import numpy as np


def test_pooled_is_normalised_and_tokens_align(router):
    enc = router.encoder.encode(["Meet John at Paris cafe on Monday.", "Hi"])
    assert enc.pooled.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(enc.pooled, axis=1), 1.0, atol=1e-5)
    text = "Meet John at Paris cafe on Monday."
    words = [text[s:e] for s, e in enc.offsets[0]]
    assert words[:4] == ["Meet", "John", "at", "Paris"]
    assert enc.tokens[0].shape == (len(enc.offsets[0]), 384)


def test_similar_texts_are_close(router):
    enc = router.encoder.encode(["What is your return policy?", "How do returns work?", "Bake bread at 200 C."])
    sims = enc.pooled @ enc.pooled.T
    assert sims[0, 1] > sims[0, 2] + 0.2


def test_truncation(router):
    enc = router.encoder.encode(["word " * 1000])
    assert enc.n_tokens[0] == router.encoder.max_tokens
