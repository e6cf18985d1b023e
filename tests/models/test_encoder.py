"""The encoder artefact built by `make setup`: shapes, casing as token types, int8 against fp32."""

from __future__ import annotations

import numpy as np
import pytest

from models.encoder import Encoder, casing_types, load_tokenizer, word_offsets


def test_casing_types_mark_every_piece_of_a_capitalised_word(settings):
    tokenizer = load_tokenizer(settings.encoder.model_dir)
    text = "Nvidia and Samsung's HQ, in seoul"
    enc = tokenizer.encode(text)
    marked = [tok for tok, t in zip(enc.tokens, casing_types(text, enc.offsets)) if t]
    assert marked == ["n", "##vid", "##ia", "samsung", "hq"]


def test_word_offsets_split_punctuation():
    text = "Hi, Ann-Marie!"
    assert [text[a:b] for a, b in word_offsets(text)] == ["Hi", ",", "Ann", "-", "Marie", "!"]


def test_pooled_is_normalised_and_tokens_align(router):
    enc = router.encoder.encode(["Meet John at Paris cafe on Monday.", "Hi"])
    assert enc.pooled.shape == (2, 384) and enc.cls.shape == (2, 384)
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


@pytest.fixture(scope="module")
def fp32(settings):
    return Encoder(settings.encoder.model_dir, device="cpu", precision="fp32")


def test_fp32_reference_loads_the_fused_model(fp32):
    assert fp32.providers == ["CPUExecutionProvider"]
    assert fp32.session._model_path.endswith("encoder.fused.onnx")
