"""Fitting a conversation into a smaller window, counted by the tiny tier-2 model's own tokenizer and chat
template (the same counts vLLM's tokenize endpoint gives the gateway)."""

from __future__ import annotations

import pytest

from models.training.tiny_llm import build_tiny_llm
from serve.tiers.context import SUMMARY_PREFIX, byte_bound, chunks_within, fit_to_window, transcript
from serve.settings import REPO_ROOT


@pytest.fixture(scope="module")
def count():
    from transformers import AutoTokenizer

    path = build_tiny_llm(REPO_ROOT / "models" / "artifacts" / "tiny-llm") / "model"
    tokenizer = AutoTokenizer.from_pretrained(path)

    async def count(messages):
        return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])

    return count


def conversation(turns: int, words: int = 60) -> list[dict]:
    messages = [{"role": "system", "content": "You are a careful assistant for the billing team."}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: " + " ".join(f"invoice{i} amount" for _ in range(words))})
        messages.append({"role": "assistant", "content": f"Answer {i}: " + " ".join("refund issued" for _ in range(words))})
    messages.append({"role": "user", "content": "And what about the last invoice?"})
    return messages


class Summariser:
    def __init__(self):
        self.calls = []

    async def __call__(self, older):
        self.calls.append(older)
        return f"{len(older)} earlier messages about invoices and refunds."


async def test_a_short_conversation_is_kept_whole_without_counting(count):
    messages = conversation(1, words=5)
    fitted = await fit_to_window(messages, 1000, count, Summariser(), 64)
    assert fitted.messages == messages and fitted.summarised == 0 and fitted.prompt_tokens is None
    assert await count(messages) <= byte_bound(messages)  # the bound that skipped the count holds


async def test_a_long_conversation_keeps_system_and_latest_turns_and_summarises_the_rest(count):
    messages = conversation(8)
    total = await count(messages)
    budget = total // 3
    summarise = Summariser()
    fitted = await fit_to_window(messages, budget, count, summarise, 64)
    assert fitted.prompt_tokens == await count(fitted.messages) <= budget
    assert fitted.messages[0] == messages[0]  # the system prompt stays first
    assert fitted.messages[1]["content"].startswith(SUMMARY_PREFIX)
    kept = fitted.messages[2:]
    assert kept == messages[-len(kept):] and kept[0]["role"] == "user" and kept[-1] == messages[-1]
    (older,) = summarise.calls
    assert older == messages[1:len(messages) - len(kept)] and fitted.summarised == len(older)
    # The cut is the earliest that fits: keeping one more exchange would not.
    one_more = [messages[0], {"role": "system", "content": SUMMARY_PREFIX + "x " * 64}] + messages[-len(kept) - 2:]
    assert await count(one_more) > budget


async def test_nothing_fits_when_the_latest_turn_alone_is_too_long(count):
    messages = [{"role": "user", "content": "word " * 2000}]
    assert await fit_to_window(messages, 500, count, Summariser(), 64) is None


def test_long_histories_are_summarised_in_window_sized_runs():
    messages = [{"role": "user", "content": "a" * 300}, {"role": "assistant", "content": "b" * 300},
                {"role": "user", "content": "c" * 5000}]
    runs = chunks_within(messages, 700)
    assert [len(r) for r in runs] == [2, 1]
    assert all(len(transcript(r).encode()) <= 700 for r in runs)
    assert runs[1][0]["content"].startswith("ccc") and runs[1][0]["role"] == "user"
