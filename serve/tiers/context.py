"""Fitting a conversation into a model's context window without losing its thread.

A conversation that ran on a large-window tier may continue on a tier-2 model with a smaller window.
:func:`fit_to_window` keeps the system prompt and the latest turns and replaces the older turns with a
summary (made on tier 2 by the caller's ``summarise``, and kept with the conversation so it is made
once). Token counts come from the caller's ``count``: the target model's own tokenizer and chat template.
A move back up to a larger window simply sends the full history again: nothing here changes what is stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from serve.api.protocol import content_text

# Chat templates frame each message with a few tokens; a byte-level tokenizer never makes more tokens than
# a text has UTF-8 bytes, so bytes plus this per message bound the count from above without a tokenizer.
FRAMING_TOKENS_BOUND = 16
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"

Count = Callable[[list[dict]], Awaitable[int]]
Summarise = Callable[[list[dict]], Awaitable[str]]


@dataclass
class Fitted:
    """What the model reads: ``messages``, their token count when it was taken (None when a cheap bound
    showed they fit), and how many older messages the summary replaced (0: none)."""

    messages: list[dict]
    prompt_tokens: int | None
    summarised: int = 0


def byte_bound(messages: list[dict]) -> int:
    """An upper bound of the prompt tokens of ``messages`` for a byte-level tokenizer."""
    return sum(len(content_text(m["content"]).encode()) + FRAMING_TOKENS_BOUND for m in messages)


def _is_system(message: dict) -> bool:
    return message["role"] in ("system", "developer")


def summary_message(summary: str) -> dict:
    """The system message that stands for the summarised turns."""
    return {"role": "system", "content": SUMMARY_PREFIX + summary}


async def fit_to_window(messages: list[dict], budget: int, count: Count, summarise: Summarise,
                        summary_tokens: int) -> Fitted | None:
    """``messages`` fitted into ``budget`` prompt tokens, or None when even the system prompt and the
    latest turn do not fit.

    Kept whole when they fit. Otherwise the system messages stay first, the latest turns (starting at a
    user message) stay last, and everything between is replaced by one summary of at most
    ``summary_tokens`` tokens; the cut is the earliest user message from which the kept part fits.
    """
    if byte_bound(messages) <= budget:
        return Fitted(messages, None)
    total = await count(messages)
    if total <= budget:
        return Fitted(messages, total)
    system = [m for m in messages if _is_system(m)]
    turns = [m for m in messages if not _is_system(m)]
    cuts = [i for i, m in enumerate(turns) if m["role"] == "user" and i > 0]
    placeholder = summary_message("x " * summary_tokens)

    async def fits(cut: int) -> bool:
        return await count(system + [placeholder] + turns[cut:]) <= budget

    # The kept part shrinks as the cut moves later, so the earliest cut that fits is found by bisection.
    lo, hi = 0, len(cuts) - 1
    if hi < 0 or not await fits(cuts[hi]):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if await fits(cuts[mid]):
            hi = mid
        else:
            lo = mid + 1
    cut = cuts[lo]
    summary = await summarise(turns[:cut])
    fitted = system + [summary_message(summary)] + turns[cut:]
    tokens = await count(fitted)
    if tokens > budget:
        return None
    return Fitted(fitted, tokens, summarised=cut)


def transcript(messages: list[dict]) -> str:
    """Messages as the plain transcript a summariser reads."""
    return "\n".join(f"{m['role']}: {content_text(m['content'])}" for m in messages)


def chunks_within(messages: list[dict], max_bytes: int) -> list[list[dict]]:
    """``messages`` split, in order, into runs whose transcripts stay within ``max_bytes`` (a message
    longer than that alone is cut at the end), for summarising a history longer than a window."""
    out: list[list[dict]] = []
    run: list[dict] = []
    size = 0
    for m in messages:
        text = f"{m['role']}: {content_text(m['content'])}"
        n = len(text.encode()) + 1
        if n > max_bytes:
            keep = max_bytes - len(m["role"]) - 8
            m = {"role": m["role"], "content": content_text(m["content"]).encode()[:keep].decode(errors="ignore")}
            n = max_bytes
        if run and size + n > max_bytes:
            out.append(run)
            run, size = [], 0
        run.append(m)
        size += n
    if run:
        out.append(run)
    return out
