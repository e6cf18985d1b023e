"""Server-sent events of chat completion chunks, as OpenAI streams them.

A tier's answer arrives as pieces: text deltas (str), tool-call deltas (list) and, last, the whole
:class:`~serve.api.turns.Answer`. The first chunk carries the role; every choice says ``finish_reason: null``
until the last one; usage comes in a chunk of its own, with no choices, only when the client asked for it
(``stream_options.include_usage``); Tierwise's routing record rides on the stream's last chunk.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from serve import metrics
from serve.api.errors import ApiError
from serve.api.protocol import ChatCompletionChunk, ChunkChoice, DeltaMessage, TierwiseInfo, Usage, completion_id
from serve.api.turns import Answer
from serve.tiers.tier3_client import Tier3Unavailable

Piece = str | list | Answer


def sse(chunk: ChatCompletionChunk) -> str:
    """One ``data:`` event of ``chunk``."""
    body = chunk.model_dump(exclude_none=True)
    # OpenAI's chunks say finish_reason: null until the last one; clients test for the key.
    for choice in body["choices"]:
        choice.setdefault("finish_reason", None)
    # ASCII-escaped: line-oriented SSE readers (httpx's and requests' iter_lines) also split at U+2028,
    # U+0085 and the like, which a model's text may hold raw.
    return f"data: {json.dumps(body)}\n\n"


async def chunk_events(info: TierwiseInfo, pieces: AsyncIterator[Piece], include_usage: bool, started: float,
                       on_answer: Callable[[Answer], Awaitable[None]],
                       on_error: Callable[[ApiError | Tier3Unavailable], ApiError]) -> AsyncIterator[str]:
    """The stream's events for ``pieces``; ``on_answer`` prices, saves and records the finished answer before
    its last chunk goes out, and ``on_error`` turns a failure mid-stream into the error event sent in its place
    (the HTTP status is already out)."""
    chunk_id, created = completion_id(), int(time.time())

    def chunk(model: str, delta: DeltaMessage | None = None, **fields) -> ChatCompletionChunk:
        choices = [ChunkChoice(delta=delta, **fields)] if delta is not None else []
        return ChatCompletionChunk(id=chunk_id, created=created, model=model, choices=choices)

    yield sse(chunk(info.model, DeltaMessage(role="assistant", content="")))
    first = True
    try:
        async for piece in pieces:
            if first and piece:
                # The first content, tool call or (for an empty answer) the end: what a client waits for.
                metrics.FIRST_TOKEN.labels(str(info.tier), info.model).observe(time.perf_counter() - started)
                first = False
            if isinstance(piece, Answer):
                await on_answer(piece)
                last = chunk(piece.model, DeltaMessage(), finish_reason=piece.finish_reason)
                if include_usage:
                    yield sse(last)
                    last = chunk(piece.model)
                    last.usage = Usage(prompt_tokens=piece.prompt_tokens, completion_tokens=piece.completion_tokens,
                                       total_tokens=piece.prompt_tokens + piece.completion_tokens)
                last.tierwise = info
                yield sse(last)
            elif isinstance(piece, list):
                yield sse(chunk(info.model, DeltaMessage(tool_calls=piece)))
            elif piece:
                yield sse(chunk(info.model, DeltaMessage(content=piece)))
    except (ApiError, Tier3Unavailable) as exc:
        yield f"data: {json.dumps(on_error(exc).body())}\n\n"
    yield "data: [DONE]\n\n"
