"""The shared MiniLM encoder: one ONNX Runtime pass gives the sentence embedding and the token states.

The router, the tier-1 heads and the FAQ index all read from the same pass, so a tier-1 answer costs one
forward pass in total.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from models.encoder_export import FUSED_NAME, INT8_NAME


@dataclass(frozen=True)
class Encoded:
    """One encoder pass over a batch of texts.

    ``pooled`` is the L2-normalised mean-pooled embedding (the sentence-transformers recipe). ``tokens``
    holds, per text, the hidden states of its word pieces without [CLS]/[SEP], with ``offsets`` giving
    each piece's character span and ``word_ids`` the index of the whitespace/punctuation word it belongs to.
    """

    pooled: np.ndarray
    tokens: list[np.ndarray]
    offsets: list[list[tuple[int, int]]]
    word_ids: list[list[int]]
    n_tokens: list[int]


def load_tokenizer(model_dir: Path, max_tokens: int | None = None) -> Tokenizer:
    """The encoder's WordPiece tokenizer, unpadded, truncated to ``max_tokens`` (None: never)."""
    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.no_padding()
    if max_tokens is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def pick_providers(device: str) -> list[str]:
    """ONNX Runtime execution providers for ``device`` (``auto``, ``cuda`` or ``cpu``)."""
    available = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise RuntimeError(
            "device 'cuda' asked for, but onnxruntime has no CUDAExecutionProvider "
            f"(available: {available}); install onnxruntime-gpu"
        )
    return ["CPUExecutionProvider"]


class Encoder:
    """Tokenizer plus the ONNX MiniLM: int8 on CPU, fp32 (fused) on CUDA.

    Args:
        model_dir: folder written by :func:`models.encoder_export.export_encoder`.
        max_tokens: truncation length; routing needs the gist, not the whole prompt.
        threads: ONNX Runtime intra-op threads (1 per replica on a shared CPU pool).
        device: ``auto``, ``cuda`` or ``cpu``.
    """

    def __init__(self, model_dir: Path, max_tokens: int = 128, threads: int = 1, device: str = "auto"):
        self.providers = pick_providers(device)
        on_cpu = self.providers[0] == "CPUExecutionProvider"
        model_path = Path(model_dir) / (INT8_NAME if on_cpu else FUSED_NAME)
        if not model_path.exists():
            raise FileNotFoundError(
                f"encoder artefact {model_path} is missing: run `make setup` (or `tierwise export-encoder`)"
            )
        self.tokenizer = load_tokenizer(model_dir, max_tokens)
        self.counter = load_tokenizer(model_dir)
        self.max_tokens = max_tokens
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_path), opts, providers=self.providers)
        self.batched = not on_cpu

    def count_tokens(self, text: str) -> int:
        """Number of word pieces in ``text``, untruncated, without special tokens."""
        return len(self.counter.encode(text, add_special_tokens=False).ids)

    def encode(self, texts: list[str]) -> Encoded:
        """One encoder pass over ``texts``.

        On CPU each text runs alone: dynamic int8 quantisation scales activations per call, so in a
        padded batch a text's scores would shift with its batch-mates (enough to flip a threshold), and
        on CPU batching buys little anyway (200 vs 180 queries/s per core, loadtests/bench_latency.py).
        On CUDA the batch runs padded, which is where batching pays.
        """
        encodings = self.tokenizer.encode_batch(texts)
        if self.batched:
            hidden = self._padded(encodings)
        else:
            hidden = [self._run(np.array([e.ids], dtype=np.int64))[0] for e in encodings]
        pooled = np.stack([h.mean(axis=0) for h in hidden])
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True) + 1e-12
        tokens, offsets, word_ids = [], [], []
        for h, enc in zip(hidden, encodings):
            # Drop [CLS] and [SEP]: heads work on the word pieces of the text itself.
            n = len(h)
            tokens.append(h[1 : n - 1])
            offsets.append(list(enc.offsets[1 : n - 1]))
            word_ids.append([w if w is not None else -1 for w in enc.word_ids[1 : n - 1]])
        return Encoded(pooled.astype(np.float32), tokens, offsets, word_ids, [len(h) for h in hidden])

    def _run(self, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        mask = np.ones_like(ids) if mask is None else mask
        (hidden,) = self.session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        return hidden

    def _padded(self, encodings) -> list[np.ndarray]:
        lengths = [len(e.ids) for e in encodings]
        ids = np.zeros((len(encodings), max(lengths)), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, enc in enumerate(encodings):
            ids[i, : lengths[i]] = enc.ids
            mask[i, : lengths[i]] = 1
        hidden = self._run(ids, mask)
        return [hidden[i, :n] for i, n in enumerate(lengths)]
