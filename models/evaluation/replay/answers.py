"""Recorded answers in OpenAI's chat completion shape, shared by the tier-2 engine and the tier-3 provider."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

from models.evaluation.replay.recordings import Recordings
from serve.tenancy.tokens import Tokenizers

# Words per streamed chunk: a recorded answer has no token boundaries, so it streams in small groups of words.
WORDS_PER_CHUNK = 3


def last_user_text(messages: list[dict]) -> str:
    """The text of the last user message (the prompt a recording is found by)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "\n".join(p.get("text", "") for p in content or [] if p.get("type") == "text")
    return ""


def chunks(text: str, words: int = WORDS_PER_CHUNK) -> list[str]:
    """``text`` cut into pieces of about ``words`` words that join back to exactly ``text``."""
    pieces, start, seen = [], 0, 0
    for i, char in enumerate(text):
        if char.isspace() and i > 0 and not text[i - 1].isspace():
            seen += 1
            if seen == words:
                pieces.append(text[start:i])
                start, seen = i, 0
    pieces.append(text[start:])
    return [p for p in pieces if p]


class Answerer:
    """Finds a conversation's recorded answer for a model and counts its tokens with the gateway's counter
    for that model; :class:`~models.evaluation.replay.recordings.NoRecording` when there is none."""

    def __init__(self, recordings: Recordings, tokenizers: Tokenizers | None = None):
        self.recordings, self.tokenizers = recordings, tokenizers or Tokenizers()

    def answer(self, model: str, messages: list[dict]) -> tuple[str, dict]:
        """The recorded content and its usage (prompt, completion and total tokens)."""
        content, _ = self.recordings.find(last_user_text(messages)).answer(model)
        counter = self.tokenizers.for_model(model)
        prompt_tokens, completion_tokens = counter.count_messages(messages), counter.count(content)
        return content, {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}


def response_body(model: str, content: str, usage: dict) -> dict:
    """A whole ``chat.completion``."""
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "usage": usage,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


def stream_events(model: str, content: str, usage: dict, include_usage: bool) -> Iterator[str]:
    """The answer as SSE ``chat.completion.chunk`` events: the role, the content in pieces, the finish reason,
    the usage when asked for, and ``[DONE]``."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}
    yield _sse(head | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    for piece in chunks(content):
        yield _sse(head | {"choices": [{"index": 0, "delta": {"content": piece}}]})
    yield _sse(head | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        yield _sse(head | {"choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


def _sse(chunk: dict) -> str:
    return f"data: {json.dumps(chunk)}\n\n"
