"""The multi-task encoder: all-MiniLM-L6-v2 fine-tuned so that one pass serves the router's reading of a
request and every tier-1 head (torch; training and export only, serving runs the ONNX export).

Heads read the last hidden states: sentence heads the [CLS] state, token heads every word piece, and the
label scorer the [CLS] state and payload against each label span the request names. The mean-pooled
embedding is kept close to the original model's (distillation while fine-tuning), so FAQ retrieval and
anything else that compares embeddings keeps working.

Casing reaches the uncased encoder through ``token_type_ids`` (1 for the pieces of a capitalised word):
without it "apple" and "Apple" look alike, and names cannot be told from words.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.heads import LinearHead
from models.tier1 import COSINE_SCALE, SCORER_DIM



class MultiTaskModel(nn.Module):
    """The MiniLM encoder plus linear heads.

    Args:
        encoder: a transformers ``BertModel`` (the packaged all-MiniLM-L6-v2).
        heads: name → number of classes, for the sentence heads ([CLS]) and token heads (every piece).
        token_heads: which of ``heads`` read word pieces.
    """

    def __init__(self, encoder: nn.Module, heads: dict[str, int], token_heads: set[str]):
        super().__init__()
        self.encoder = encoder
        dim = encoder.config.hidden_size
        self.heads = nn.ModuleDict({name: nn.Linear(dim, n) for name, n in heads.items()})
        self.token_heads = set(token_heads)
        self.label_query = nn.Linear(2 * dim, SCORER_DIM)
        self.label_key = nn.Linear(dim, SCORER_DIM)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """Last hidden states ``[batch, pieces, dim]``."""
        return self.encoder(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

    def label_scores(self, cls: torch.Tensor, payload: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scores of ``labels`` ``[n, dim]`` (each label span's mean state) for one request, from its [CLS]
        and mean payload states (``models/tier1.py::label_logits`` is the same in numpy)."""
        query = self.label_query(torch.cat([cls, payload]))
        cosine = torch.nn.functional.cosine_similarity(labels, payload[None, :], dim=-1)
        return COSINE_SCALE * cosine + self.label_key(labels) @ query / SCORER_DIM**0.5

    def linear_heads(self, labels: dict[str, tuple[str, ...]]) -> dict[str, LinearHead]:
        """The heads as numpy :class:`LinearHead` objects for serving, with their class names."""
        out = {}
        for name, layer in self.heads.items():
            out[name] = LinearHead(layer.weight.detach().T.numpy().copy(), layer.bias.detach().numpy().copy(),
                                   tuple(labels[name]))
        out["label_query"] = _projection(self.label_query)
        out["label_key"] = _projection(self.label_key)
        return out


def _projection(layer: nn.Linear) -> LinearHead:
    return LinearHead(layer.weight.detach().T.numpy().copy(), layer.bias.detach().numpy().copy(), ())


def encoder_delta(model: MultiTaskModel) -> dict[str, torch.Tensor]:
    """The fine-tuned encoder weights that differ from the packaged model, in fp16.

    Word embeddings stay frozen during fine-tuning, so they are left out: what is committed is the
    transformer layers (~22 MB in fp16), and export rebuilds the model from the package plus this delta.
    """
    return {name: p.detach().to(torch.float16).contiguous() for name, p in model.encoder.named_parameters()
            if "word_embeddings" not in name and not name.startswith("pooler.")}


def load_encoder(delta_path: Path | None = None) -> nn.Module:
    """The packaged all-MiniLM-L6-v2, with the fine-tuned ``delta_path`` (safetensors) applied when given."""
    from transformers import AutoModel

    from models.training.base_model import packaged_model_dir

    encoder = AutoModel.from_pretrained(str(packaged_model_dir())).eval()
    if delta_path is not None:
        from safetensors.torch import load_file

        delta = load_file(str(delta_path))
        params = dict(encoder.named_parameters())
        unknown = set(delta) - set(params)
        if unknown:
            raise ValueError(f"{delta_path}: weights {sorted(unknown)[:3]} are not in the encoder")
        with torch.no_grad():
            for name, value in delta.items():
                params[name].copy_(value.to(torch.float32))
    return encoder
