"""Quality heads: model names, features, merging of sources, training and persistence."""

from __future__ import annotations

import numpy as np
import pytest

from models.quality import QualityHeads, canonical, structural_features
from models.training import quality
from models.training.quality import QualityRow, load_quality_rows, train_quality_heads


def test_one_name_per_model_across_sources():
    assert canonical("mistralai/mixtral-8x7b-chat") == canonical("mistralai/Mixtral-8x7B-Instruct-v0.1")
    assert canonical("claude-v2") == canonical("claude-2") == "claude-2"
    assert canonical("meta/llama-2-70b-chat") == canonical("Llama-2-70b-chat")


def test_structural_features_see_code_and_math():
    plain, code, maths = structural_features(["Tell me a joke", "def f(x):\n    return x;", "Solve 3x + 4 = 19"])
    assert code[2] > plain[2] and maths[4] > plain[4] and code[1] > plain[1]


def test_identical_prompts_from_two_sources_are_merged(monkeypatch):
    monkeypatch.setattr(quality, "QUALITY_SOURCES", {
        "a": lambda: [QualityRow("What is 2+2?", "a", {"m1": 1.0}), QualityRow("  ", "a", {"m1": 0.0})],
        "b": lambda: [QualityRow("what is 2+2?", "b", {"m1": 0.0, "m2": 1.0}), QualityRow("Other", "b", {"m2": 0.0})]})
    rows = load_quality_rows(("a", "b"))
    assert [r.text for r in rows] == ["What is 2+2?", "Other"]
    assert rows[0].labels == {"m1": 1.0, "m2": 1.0}  # the first source's label wins where they disagree


def test_heads_learn_a_planted_signal_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    n, dim = 1500, 384
    pooled = rng.normal(size=(n, dim)).astype(np.float32)
    # "weak" answers well exactly when the first embedding dimension is positive; "rare" has too few labels.
    rows = [QualityRow(f"prompt number {i} about topic {i % 97}", "s", {"weak": float(pooled[i, 0] > 0)}
                       | ({"rare": 1.0} if i < 10 else {})) for i in range(n)]
    heads, report = train_quality_heads(rows, pooled)
    assert heads.models == ["weak"]
    assert report["heads"]["weak"]["test"]["auc"] > 0.9
    assert report["leak_check_train_vs_test"]["leaking_test_rows"] == 0
    texts = [r.text for r in rows]
    p = heads.predict(pooled, texts)
    assert p.shape == (n, 1) and ((p > 0.5).ravel() == (pooled[:, 0] > 0)).mean() > 0.85
    heads.save(tmp_path / "quality.npz")
    loaded = QualityHeads.load(tmp_path / "quality.npz")
    np.testing.assert_allclose(loaded.predict(pooled, texts), p, rtol=1e-4)
    with pytest.raises(KeyError, match="no quality head for 'gpt-9'"):
        loaded.index("gpt-9")
