"""The leak check of the synthetic requests: no test template, payload text or prompt reaches train or
calib."""

from __future__ import annotations

from models.training.requests.pools import SPLITS, Pools, load_pools, normalise_text
from models.training.requests.render import (
    UNSEEN_LABEL_SETS,
    MadeRequest,
    make_requests,
)
from models.training.requests.templates import BARE, template_split


def _source_text(made: MadeRequest) -> str | None:
    return normalise_text(made.text) if made.text is not None else None


def leak_check(seed: int = 0, per_task: dict[str, int] | None = None, pools: dict[str, Pools] | None = None,
               strict: bool = True) -> dict[str, int]:
    """Build all three splits and count what test material reaches train or calib: test template ids, and
    train/calib requests made from a text that is in the test pools (payloads and prompts alike). Raises
    ValueError on any leak when ``strict``; returns the counts (for the report)."""
    built = {s: make_requests(s, seed, per_task, pools[s] if pools else None) for s in SPLITS}
    split_of = template_split()
    test_ids = {tid for tid, s in split_of.items() if s == "test"}
    fitted = built["train"] + built["calib"]
    test_texts = (pools["test"] if pools else load_pools("test")).texts()
    counts = {
        "requests_train": len(built["train"]),
        "requests_calib": len(built["calib"]),
        "requests_test": len(built["test"]),
        "templates_train": sum(1 for tid, s in split_of.items() if s == "train" and tid != BARE),
        "templates_test": len(test_ids),
        "test_templates_in_train_calib": len({m.example.template_id for m in fitted} & test_ids),
        "test_texts_in_train_calib": sum(1 for m in fitted if _source_text(m) in test_texts),
        "train_templates_in_test": sum(1 for m in built["test"]
                                       if m.example.template_id != BARE and m.example.template_id not in test_ids),
        "unseen_label_sets_in_train": sum(1 for m in built["train"] if m.example.label_set in UNSEEN_LABEL_SETS),
    }
    leaks = {k: v for k, v in counts.items() if k.endswith(("_in_train_calib", "_in_test", "_in_train")) and v}
    if strict and leaks:
        raise ValueError(f"test material leaks into train/calib: {leaks}")
    return counts
