"""The committed test fixtures that training writes: held-out rows for the heads' unit tests, and the int8
encoder's reference outputs that a machine whose int8 kernels differ fails against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.encoder import Encoder
from models.heads import LinearHead
from models.tier1 import load_heads
from models.training import datasets as ds
from models.training.head_calibration import calibration_sets


def write_head_fixtures(path: Path, heads: dict[str, LinearHead], per_head: int = 60, seed: int = 0) -> dict:
    """Commit-sized rows for the heads' unit tests, drawn from held-out (calibration) rows, never test rows:
    sentence heads as ``[text, label]``, taggers as ``[tokens, tags]``."""
    import json

    out = {rows.head: ds.sample([[t, heads[rows.head].labels[g]] for t, g in zip(rows.texts, rows.gold)],
                                per_head, seed) for rows in calibration_sets(heads)}
    out["ner_conll"] = [[s.tokens, s.tags] for s in ds.sample(ds.conll2003("dev"), per_head, seed)]
    out["ner_wnut"] = [[s.tokens, s.tags] for s in ds.sample(ds.wnut17_own_types("dev"), per_head, seed)]
    Path(path).write_text(json.dumps(out, ensure_ascii=False, indent=0) + "\n")
    return {k: len(v) for k, v in out.items()}


REFERENCE_HEADS = ("task", "sentiment2", "sentiment3", "clinc150", "banking77")


def encoder_outputs(encoder: Encoder, heads: dict[str, LinearHead], texts: list[str]) -> dict[str, np.ndarray]:
    """What the int8-against-fp32 and cross-machine checks compare, per text: the pooled embedding and
    every sentence head's logits."""
    enc = [encoder.encode([t]) for t in texts]
    out = {"pooled": np.stack([e.pooled[0] for e in enc])}
    cls = np.stack([e.cls[0] for e in enc])
    for name in REFERENCE_HEADS:
        out[name] = heads[name].logits(cls)
    return out


def write_int8_reference(path: Path, encoder_dir: Path, heads_dir: Path, texts: list[str]) -> None:
    """Commit the int8 encoder's outputs on fixture texts (``tests/fixtures/int8_reference.npz``): a test
    then checks that any machine, whatever its int8 kernels, gives the same numbers."""
    from models.training.quantize import kernel_report

    outputs = encoder_outputs(Encoder(encoder_dir, device="cpu"), load_heads(heads_dir), texts)
    np.savez_compressed(path, texts=np.array(texts), machine=np.array(str(kernel_report())), **outputs)
