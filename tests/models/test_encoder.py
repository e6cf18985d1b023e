"""The encoder artefact built by `make setup`: shapes, casing as token types, int8 against fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.encoder import Encoder, casing_types, load_tokenizer, word_offsets
from models.labels import TASKS
from models.router import ASKED_TIER1, asked_task
from models.training.fixtures import REFERENCE_HEADS, encoder_outputs

# The stated tolerances (README, "Models"): int8 against fp32 (calibrated probabilities within 0.2, every
# answer kept at its head's threshold the same), and int8 on one machine against another (the same numbers).
POOLED_COSINE_MIN = 0.98
PROB_TOLERANCE = 0.2
LABEL_AGREEMENT = 0.9
INT8_REFERENCE_ATOL = 1e-4


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


REFERENCE = Path(__file__).resolve().parent.parent / "fixtures" / "int8_reference.npz"
HEADS_FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "heads_fixture.json"


def test_int8_reproduces_the_committed_reference_on_any_cpu(router):
    """The int8 outputs written by `tierwise train` on one machine: every x86 machine, with VNNI or not,
    must compute the same numbers (7-bit weights keep AVX2's int16 pair sums exact)."""
    reference = np.load(REFERENCE)
    texts = [str(t) for t in reference["texts"]]
    outputs = encoder_outputs(router.encoder, router.heads, texts)
    for name, values in outputs.items():
        np.testing.assert_allclose(values, reference[name], atol=INT8_REFERENCE_ATOL, err_msg=name)


def _answer(head: str, probs: np.ndarray) -> np.ndarray:
    """What a head's probabilities decide: the class, where sentiment and classification are one ask."""
    best = probs.argmax(1)
    if head == "task":
        best = np.where(best == TASKS.index("classify"), TASKS.index("sentiment"), best)
    return best


def _confidence(head: str, probs: np.ndarray) -> np.ndarray:
    """The confidence a keep threshold applies to: for the task head, that of a tier-1 ask (the router
    keeps only those on tier 1), else the top probability."""
    if head != "task":
        return probs.max(1)
    asked = [asked_task(dict(zip(TASKS, row))) for row in probs]
    return np.array([c if t in ASKED_TIER1 else 0.0 for t, c in asked])


def test_int8_agrees_with_fp32_within_the_stated_tolerance(router, fp32):
    texts = [str(t) for t in np.load(REFERENCE)["texts"]]
    texts += [row[0] for head in ("sentiment2", "sentiment3", "clinc150", "banking77")
              for row in json.loads(HEADS_FIXTURE.read_text())[head][:30]]
    int8 = encoder_outputs(router.encoder, router.heads, texts)
    ref = encoder_outputs(fp32, router.heads, texts)
    cosine = (int8["pooled"] * ref["pooled"]).sum(axis=1)
    assert cosine.min() >= POOLED_COSINE_MIN, cosine.min()
    for head in REFERENCE_HEADS:
        p, q = router.calibration.probs(head, int8[head]), router.calibration.probs(head, ref[head])
        assert np.abs(p - q).max() <= PROB_TOLERANCE, (head, np.abs(p - q).max())
        same = _answer(head, p) == _answer(head, q)
        assert same.mean() >= LABEL_AGREEMENT, head
        threshold = router.calibration.get(head).threshold
        kept = (_confidence(head, p) >= threshold) | (_confidence(head, q) >= threshold)
        assert same[kept].all(), head


def test_cuda_asked_on_a_cpu_only_build_runs_on_the_cpu_and_says_so(settings, caplog):
    import logging

    from models.encoder import Encoder, cuda_available

    assert not cuda_available()  # this machine's onnxruntime is the CPU build
    with caplog.at_level(logging.WARNING, logger="models.encoder"):
        encoder = Encoder(settings.encoder.model_dir, device="cuda")
    assert encoder.providers == ["CPUExecutionProvider"]
    assert "no CUDAExecutionProvider" in caplog.text and "running on the CPU" in caplog.text
    assert encoder.encode(["Where is my parcel?"]).pooled.shape == (1, 384)


def test_a_gpu_cluster_without_cuda_onnxruntime_keeps_the_router_on_the_cpu(settings, monkeypatch, caplog):
    import logging

    from serve import app

    monkeypatch.setattr(app, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 1.0})
    with caplog.at_level(logging.WARNING, logger="serve.app"):
        assert app.router_uses_gpu(settings) is False
    assert "router stays on the CPU" in caplog.text
    monkeypatch.setattr(app, "cuda_available", lambda: True)
    assert app.router_uses_gpu(settings) is True
