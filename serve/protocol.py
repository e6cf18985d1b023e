"""OpenAI-compatible request and response models, plus Tierwise's routing metadata."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["system", "developer", "user", "assistant", "tool"]


class TextPart(BaseModel):
    """A text content part (the only kind Tierwise accepts)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text, parts joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    """``stream_options`` of the OpenAI API."""

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body. Unknown fields are accepted and passed to the provider."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1)
    user: str | None = None

    @field_validator("messages")
    @classmethod
    def _has_user_turn(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.text().strip() for m in messages):
            raise ValueError("messages must contain a non-empty user message")
        return messages

    def generation_params(self) -> dict[str, Any]:
        """Parameters passed on to a generating tier (everything but model, messages and streaming)."""
        skip = {"model", "messages", "stream", "stream_options", "n"}
        return {k: v for k, v in self.model_dump(exclude_none=True).items() if k not in skip}


class TierwiseInfo(BaseModel):
    """Routing metadata: the ``tierwise`` field of every response."""

    tier: int
    model: str
    task: str
    reason: str
    confidence: float
    escalated_from: int | None = None
    cost_usd: float | None = None
    baseline_cost_usd: float | None = None
    conversation_id: str | None = None
    result: dict | None = None
    scores: dict | None = None


class Usage(BaseModel):
    """Token counts."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    """The answer message."""

    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    """One (the only) choice."""

    index: int = 0
    message: AssistantMessage
    finish_reason: str = "stop"


def completion_id() -> str:
    """A fresh OpenAI-style completion id."""
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletionResponse(BaseModel):
    """A non-streamed chat completion."""

    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    tierwise: TierwiseInfo


class DeltaMessage(BaseModel):
    """The increment of a streamed message."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    """One choice of a stream chunk."""

    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed completion; the last one carries ``tierwise``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    tierwise: TierwiseInfo | None = None


class ModelCard(BaseModel):
    """An entry of ``GET /v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "tierwise"
    tier: int | None = None


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class TaskRequest(BaseModel):
    """``POST /v1/tasks/{task}`` body."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text must not be blank")
        return text


class TaskResponse(BaseModel):
    """A tier-1 task result."""

    task: str
    result: dict
    confidence: float
    reply: str
    model: str
    abstained: bool = False
    reason: str | None = None
    latency_ms: float


class ErrorDetail(BaseModel):
    """The ``error`` object of an OpenAI-style error body."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None
    tierwise: TierwiseInfo | None = None


class ErrorResponse(BaseModel):
    """OpenAI-style error body."""

    error: ErrorDetail
