"""The shared MiniLM encoder: one ONNX Runtime pass gives the sentence embedding and the token states.

The router, the tier-1 heads and the FAQ index all read from the same pass, so a tier-1 answer costs one
forward pass in total.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer
from tokenizers.pre_tokenizers import BertPreTokenizer

# The files ``tierwise export-encoder`` writes (models/training/export.py): fp32 with fused attention, and int8.
FUSED_NAME = "encoder.fused.onnx"
INT8_NAME = "encoder.int8.onnx"

log = logging.getLogger(__name__)

_PRE_TOKENIZER = BertPreTokenizer()


@dataclass(frozen=True)
class Encoded:
    """One encoder pass over a batch of texts.

    ``pooled`` is the L2-normalised mean-pooled embedding (the sentence-transformers recipe), ``cls`` the
    [CLS] state that the sentence heads read. ``tokens``
    holds, per text, the hidden states of its word pieces without [CLS]/[SEP], with ``offsets`` giving
    each piece's character span and ``word_ids`` the index of the whitespace/punctuation word it belongs to.
    """

    pooled: np.ndarray
    cls: np.ndarray
    tokens: list[np.ndarray]
    offsets: list[list[tuple[int, int]]]
    word_ids: list[list[int]]
    n_tokens: list[int]


def casing_types(text: str, offsets: list[tuple[int, int]]) -> list[int]:
    """``token_type_ids`` that carry casing: 1 for each piece of a word that starts with a capital letter.

    The encoder is uncased; the multi-task fine-tuning taught it to read casing from the token types,
    which a single-sentence input otherwise leaves at 0.
    """
    types, word_start = [], 0
    for start, end in offsets:
        if end == start:
            types.append(0)
            continue
        if start == 0 or not text[start - 1].isalnum() or not text[start].isalnum():
            word_start = start
        types.append(int(text[word_start].isupper()))
    return types


def word_offsets(text: str) -> list[tuple[int, int]]:
    """Character spans of the words the encoder's pre-tokenizer sees (whitespace and punctuation split)."""
    return [span for _, span in _PRE_TOKENIZER.pre_tokenize_str(text)]


def load_tokenizer(model_dir: Path, max_tokens: int | None = None) -> Tokenizer:
    """The encoder's WordPiece tokenizer, unpadded, truncated to ``max_tokens`` (None: never)."""
    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.no_padding()
    if max_tokens is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def cuda_available() -> bool:
    """Whether this ONNX Runtime build can run on CUDA (``onnxruntime-gpu``, the ``gpu`` extra)."""
    return "CUDAExecutionProvider" in ort.get_available_providers()


def pick_providers(device: str) -> list[str]:
    """ONNX Runtime execution providers for ``device`` (``auto``, ``cuda`` or ``cpu``).

    CUDA asked for on a build without it (the CPU ``onnxruntime`` on a GPU node) runs on the CPU with a
    warning rather than failing the replica: routing slower beats no routing.
    """
    if device in ("auto", "cuda") and cuda_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        log.warning("encoder device 'cuda' asked for, but this onnxruntime build has no CUDAExecutionProvider "
                    "(available: %s); running on the CPU. Install the gpu extra (onnxruntime-gpu) on GPU nodes.",
                    ort.get_available_providers())
    return ["CPUExecutionProvider"]


class Encoder:
    """Tokenizer plus the ONNX MiniLM: int8 on CPU, fp32 (fused) on CUDA.

    Args:
        model_dir: folder written by :func:`models.training.export.export_encoder`.
        max_tokens: truncation length; routing needs the gist, not the whole prompt.
        threads: ONNX Runtime intra-op threads (1 per replica on a shared CPU pool).
        device: ``auto``, ``cuda`` or ``cpu``.
        precision: ``auto`` (int8 on CPU, fp32 on CUDA), or ``fp32``: the reference the int8 model is
            checked against.
    """

    def __init__(self, model_dir: Path, max_tokens: int = 128, threads: int = 1, device: str = "auto",
                 precision: str = "auto"):
        self.providers = pick_providers(device)
        on_cpu = self.providers[0] == "CPUExecutionProvider"
        int8 = on_cpu and precision != "fp32"
        model_path = Path(model_dir) / (INT8_NAME if int8 else FUSED_NAME)
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
        types = [casing_types(text, enc.offsets) for text, enc in zip(texts, encodings)]
        if self.batched:
            hidden = self._padded(encodings, types)
        else:
            hidden = [self._run(np.array([e.ids], dtype=np.int64), np.array([t], dtype=np.int64))[0]
                      for e, t in zip(encodings, types)]
        pooled = np.stack([h.mean(axis=0) for h in hidden])
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True) + 1e-12
        tokens, offsets, word_ids = [], [], []
        for h, enc in zip(hidden, encodings):
            # Drop [CLS] and [SEP]: token heads work on the word pieces of the text itself.
            n = len(h)
            tokens.append(h[1 : n - 1])
            offsets.append(list(enc.offsets[1 : n - 1]))
            word_ids.append([w if w is not None else -1 for w in enc.word_ids[1 : n - 1]])
        cls = np.stack([h[0] for h in hidden]).astype(np.float32)
        return Encoded(pooled.astype(np.float32), cls, tokens, offsets, word_ids, [len(h) for h in hidden])

    def _run(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        mask = np.ones_like(ids) if mask is None else mask
        (hidden,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        return hidden

    def _padded(self, encodings, types: list[list[int]]) -> list[np.ndarray]:
        lengths = [len(e.ids) for e in encodings]
        ids = np.zeros((len(encodings), max(lengths)), dtype=np.int64)
        type_ids = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for i, enc in enumerate(encodings):
            ids[i, : lengths[i]] = enc.ids
            type_ids[i, : lengths[i]] = types[i]
            mask[i, : lengths[i]] = 1
        hidden = self._run(ids, type_ids, mask)
        return [hidden[i, :n] for i, n in enumerate(lengths)]
