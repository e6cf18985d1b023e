"""A tiny random Llama with a locally trained tokenizer, a chat template and LoRA adapters.

Tier 2 runs on vLLM through Ray Serve LLM; on a GPU cluster it serves 7B-14B instruct models, and on a
CPU machine (tests, `make serve-tier2`) it serves this model through exactly the same code path. Its
weights are random, so it writes gibberish, but it has everything that path touches: a Llama
architecture vLLM's CPU kernels run (head_dim 32), a byte-level BPE tokenizer (so token counts are the
model's own), a chat template with a system role, an end-of-turn token, a context window, and adapters
in the PEFT layout that vLLM's LoRA loader reads.

``build_tiny_llm(out_dir)`` takes a few seconds and writes about 1 MB; nothing comes from a model hub.
"""

from __future__ import annotations

import json
from pathlib import Path

SEED = 0
VOCAB_SIZE = 1024
HIDDEN = 64
HEADS = 2  # head_dim = 32, the smallest vLLM's CPU attention kernels take
LAYERS = 2
INTERMEDIATE = 128
MAX_POSITIONS = 1024
ADAPTERS = ("tiny-sql", "tiny-extract")
LORA_RANK = 8
LORA_TARGETS = ("q_proj", "v_proj")
SPECIAL_TOKENS = ("<|pad|>", "<|begin_of_text|>", "<|start_header|>", "<|end_header|>", "<|eot|>")

# Llama-3 style: each message framed by a role header and an end-of-turn token.
CHAT_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}"
    "{% for message in messages %}"
    "{{ '<|start_header|>' + message['role'] + '<|end_header|>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|eot|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header|>assistant<|end_header|>\n' }}{% endif %}"
)


def _corpus() -> list[str]:
    """Text the tokenizer learns its merges from: the repository's own FAQ and request templates, so the
    build needs no data folder and gives the same tokenizer everywhere."""
    root = Path(__file__).resolve().parents[2]
    texts = []
    for path in (root / "configs" / "faq.yaml", root / "models" / "training" / "requests" / "templates.yaml"):
        texts.extend(line.strip() for line in path.read_text().splitlines() if line.strip())
    return texts


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def _write_adapter(out: Path, base_dir: Path, config, seed: int) -> None:
    """One LoRA adapter in PEFT's layout (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    head_dim = config.hidden_size // config.num_attention_heads
    out_features = {"q_proj": config.num_attention_heads * head_dim,
                    "v_proj": config.num_key_value_heads * head_dim}
    tensors = {}
    for layer in range(config.num_hidden_layers):
        for target in LORA_TARGETS:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(LORA_RANK, config.hidden_size, generator=generator) * 0.02
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_features[target], LORA_RANK, generator=generator) * 0.02
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base_dir),
        "r": LORA_RANK, "lora_alpha": 2 * LORA_RANK, "lora_dropout": 0.0, "bias": "none",
        "target_modules": list(LORA_TARGETS), "fan_in_fan_out": False, "inference_mode": True,
    }, indent=2))


def build_tiny_llm(out_dir: Path, force: bool = False) -> Path:
    """Write the model to ``out_dir/model`` and its adapters to ``out_dir/adapters/<name>``; return
    ``out_dir``. Idempotent: an existing build is kept unless ``force``."""
    model_dir, adapters_dir = out_dir / "model", out_dir / "adapters"
    if (model_dir / "config.json").is_file() and all((adapters_dir / a / "adapter_config.json").is_file()
                                                     for a in ADAPTERS) and not force:
        return out_dir
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(SEED)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_train_tokenizer(), bos_token="<|begin_of_text|>",
                                        eos_token="<|eot|>", pad_token="<|pad|>", model_max_length=MAX_POSITIONS)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                         num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                         max_position_embeddings=MAX_POSITIONS, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True, torch_dtype="float32")
    model = LlamaForCausalLM(config).eval()
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    # vLLM reads the chat template from the tokenizer config; a plain file too, for other servers.
    (model_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (model_dir / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
         "pad_token_id": tokenizer.pad_token_id}))
    for i, name in enumerate(ADAPTERS):
        _write_adapter(adapters_dir / name, model_dir, config, SEED + 1 + i)
    return out_dir
