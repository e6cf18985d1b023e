"""OpenAI-compatible request and response models, plus Tierwise's routing metadata.

Requests are validated to the shapes OpenAI documents (content parts, tools, response formats, logprobs)
and kept as sent, so that a higher tier receives them intact; :func:`request_view` extracts what tier 1's
checks need (``models.request.RequestView``).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal, Union

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from models.request import RequestView

Role = Literal["system", "developer", "user", "assistant", "tool"]
# Content parts that carry something other than words: tier 1 reads none of them.
MEDIA_PART_TYPES = ("image_url", "input_audio", "file")
# Earlier turns handed to the router and to tier 1 as context, newest last; the encoder keeps the first
# 128 tokens of it anyway.
CONTEXT_CHARS = 1000
_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class _Part(BaseModel):
    # Parts travel to tier 3 as sent, so fields this gateway does not know are kept, not refused.
    model_config = ConfigDict(extra="allow")


class TextPart(_Part):
    """A text content part."""

    type: Literal["text"]
    text: str


class ImageUrl(_Part):
    """The image of an ``image_url`` part: an http(s) or ``data:`` URL."""

    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(_Part):
    """An image content part (user messages)."""

    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(_Part):
    """The audio of an ``input_audio`` part: base64 data and its format (wav, mp3)."""

    data: str = Field(min_length=1)
    format: str = Field(min_length=1)


class InputAudioPart(_Part):
    """An audio content part (user messages)."""

    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(_Part):
    """The file of a ``file`` part: inline base64 data or the id of an uploaded file."""

    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None

    @model_validator(mode="after")
    def _has_file(self) -> "FileRef":
        if not (self.file_data or self.file_id):
            raise ValueError("a file part needs file_data or file_id")
        return self


class FilePart(_Part):
    """A file content part (user messages)."""

    type: Literal["file"]
    file: FileRef


class RefusalPart(_Part):
    """A refusal content part (assistant messages)."""

    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[Union[TextPart, ImageUrlPart, InputAudioPart, FilePart, RefusalPart],
                        Field(discriminator="type")]


def content_text(content: str | list[dict] | None) -> str:
    """The text of a stored or forwarded message's content: a string, or its text parts joined."""
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if p.get("type") == "text")
    return content or ""


# Message fields besides role and content that pass through to the model that answers.
FORWARDED_FIELDS = ("name", "tool_calls", "tool_call_id", "function_call", "refusal")


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _parts_fit_the_role(self) -> "ChatMessage":
        # The roles OpenAI allows each part on: media come from the user, refusals from the assistant.
        for i, part in enumerate(self.content if isinstance(self.content, list) else []):
            if part.type == "refusal" and self.role != "assistant":
                raise ValueError(f"refusal parts (content.{i}) are only allowed on assistant messages")
            if part.type in MEDIA_PART_TYPES and self.role != "user":
                raise ValueError(f"{part.type} parts (content.{i}) are only allowed on user messages")
        return self

    def text(self) -> str:
        """The message's text, text parts joined."""
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content if p.type == "text")
        return self.content or ""

    def media_types(self) -> list[str]:
        """The types of the message's image, audio and file parts, in order."""
        if not isinstance(self.content, list):
            return []
        return [p.type for p in self.content if p.type in MEDIA_PART_TYPES]

    def record(self) -> dict:
        """The message as stored and forwarded: role, content (parts kept as they were sent) and the fields
        an agent's tool loop needs (``name``, ``tool_calls``, ``tool_call_id``, ``function_call``,
        ``refusal``). An assistant message that only calls tools keeps ``content: null``."""
        extra = {k: v for k, v in (self.model_extra or {}).items() if k in FORWARDED_FIELDS and v is not None}
        if isinstance(self.content, list):
            content = [p.model_dump(exclude_unset=True) for p in self.content]
        elif self.content is None and (extra.get("tool_calls") or extra.get("function_call")):
            content = None
        else:
            content = self.content or ""
        return {"role": self.role, "content": content, **extra}


class StreamOptions(BaseModel):
    """``stream_options`` of the OpenAI API."""

    include_usage: bool = False


class FunctionDefinition(BaseModel):
    """A callable function: a tool's ``function``, or an entry of the legacy ``functions``."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _parameters_are_a_schema(cls, parameters: dict | None) -> dict | None:
        if parameters is not None:
            check_json_schema(parameters)
        return parameters


class FunctionTool(BaseModel):
    """A ``tools`` entry of type ``function``."""

    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionDefinition


class CustomToolDefinition(BaseModel):
    """The ``custom`` object of a custom tool (free-form input)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=_NAME)


class CustomTool(BaseModel):
    """A ``tools`` entry of type ``custom``."""

    model_config = ConfigDict(extra="allow")
    type: Literal["custom"]
    custom: CustomToolDefinition


Tool = Annotated[Union[FunctionTool, CustomTool], Field(discriminator="type")]


class NamedFunction(BaseModel):
    """``{"name": ...}``: the function a ``tool_choice`` or ``function_call`` forces."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)


class FunctionChoice(BaseModel):
    """``tool_choice`` forcing one function tool."""

    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: NamedFunction


class CustomChoice(BaseModel):
    """``tool_choice`` forcing one custom tool."""

    model_config = ConfigDict(extra="allow")
    type: Literal["custom"]
    custom: NamedFunction


class AllowedToolsChoice(BaseModel):
    """``tool_choice`` restricting the model to a subset of the tools."""

    model_config = ConfigDict(extra="allow")
    type: Literal["allowed_tools"]
    allowed_tools: dict[str, Any]


ToolChoice = Union[Literal["none", "auto", "required"],
                   Annotated[Union[FunctionChoice, CustomChoice, AllowedToolsChoice], Field(discriminator="type")]]


class TextFormat(BaseModel):
    """``response_format: {"type": "text"}``: a plain answer (the default)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    """``response_format: {"type": "json_object"}``: any JSON object."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["json_object"]


class JsonSchemaSpec(BaseModel):
    """The ``json_schema`` of a structured-output request."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=_NAME)
    description: str | None = None
    # ``schema`` would shadow a BaseModel attribute, hence the alias.
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(BaseModel):
    """``response_format: {"type": "json_schema", "json_schema": {...}}``: JSON that validates against it."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[Union[TextFormat, JsonObjectFormat, JsonSchemaFormat], Field(discriminator="type")]


def check_json_schema(schema: dict) -> None:
    """Raise ``ValueError`` saying why ``schema`` is not a valid JSON Schema (draft 2020-12)."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise ValueError(f"not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where else "")) from None


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
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    functions: list[FunctionDefinition] | None = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("messages")
    @classmethod
    def _has_user_turn(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and (m.text().strip() or m.media_types()) for m in messages):
            raise ValueError("messages must contain a non-empty user message")
        return messages

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice_needs_tools(cls, choice, info: ValidationInfo):
        if choice not in (None, "none") and not info.data.get("tools"):
            raise ValueError("tool_choice is only allowed when tools are given")
        return choice

    @field_validator("function_call")
    @classmethod
    def _function_call_needs_functions(cls, call, info: ValidationInfo):
        if call not in (None, "none") and not info.data.get("functions"):
            raise ValueError("function_call is only allowed when functions are given")
        return call

    @field_validator("response_format")
    @classmethod
    def _schema_is_valid(cls, fmt):
        if isinstance(fmt, JsonSchemaFormat):
            try:
                check_json_schema(fmt.json_schema.schema_)
            except ValueError as exc:
                raise ValueError(f"json_schema.schema is {exc}") from None
        return fmt

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_needs_logprobs(cls, top: int | None, info: ValidationInfo) -> int | None:
        if top is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs requires logprobs: true")
        return top

    def generation_params(self) -> dict[str, Any]:
        """Parameters passed on to a generating tier (everything but model, messages and streaming), as sent."""
        skip = {"model", "messages", "stream", "stream_options", "n"}
        sent = self.model_dump(by_alias=True, exclude_unset=True)
        return {k: v for k, v in sent.items() if k not in skip and v is not None}

    def requested_output_tokens(self) -> int | None:
        """The output tokens the request asks for at most (None: no limit set)."""
        return self.max_completion_tokens or self.max_tokens

    def response_format_dict(self) -> dict | None:
        """``response_format`` as sent, or None."""
        if self.response_format is None:
            return None
        return self.response_format.model_dump(by_alias=True, exclude_unset=True)

    def offers_tools(self) -> bool:
        """Whether the model may call a tool or function in its answer."""
        tools = bool(self.tools) and self.tool_choice != "none"
        functions = bool(self.functions) and self.function_call != "none"
        return tools or functions


def new_records(request: ChatCompletionRequest, history: list[dict]) -> list[dict]:
    """The request's messages as records, less a resent copy of the stored ``history`` at their start."""
    records = [m.record() for m in request.messages]
    stored = [{k: v for k, v in m.items() if k != "tierwise"} for m in history]
    if history and records[: len(stored)] == stored:
        return records[len(stored):]
    return records


def _in_tool_exchange(message: ChatMessage) -> bool:
    extra = message.model_extra or {}
    return message.role == "tool" or bool(extra.get("tool_calls") or extra.get("function_call"))


def request_view(request: ChatCompletionRequest, history: list[dict]) -> RequestView:
    """What tier 1 must know about a request: its texts and its constraints.

    ``user`` is the newest user message; ``system`` the system and developer messages of the whole
    conversation; ``context`` the earlier user, assistant and tool turns (the last
    :data:`CONTEXT_CHARS`). ``has_tools`` is set when the model may call a tool (tools or functions
    offered and not switched off) or when the new messages are part of a tool exchange (a tool result, an
    assistant tool call): either way the answer is not tier 1's kind. ``non_text_parts`` lists the image,
    audio and file parts of the new messages (refusal parts are the assistant's own words, so they do not
    count).
    """
    new = new_records(request, history)
    new_messages = request.messages[len(request.messages) - len(new):]
    conversation = [{"role": m["role"], "content": m["content"]} for m in history] + new
    last_user = max(i for i, m in enumerate(conversation) if m["role"] == "user")
    system = [content_text(m["content"]) for m in conversation if m["role"] in ("system", "developer")]
    earlier = [content_text(m["content"]) for m in conversation[:last_user] if m["role"] not in ("system", "developer")]
    parts = sorted({t for m in new_messages for t in m.media_types()})
    in_tool_exchange = any(_in_tool_exchange(m) for m in new_messages)
    return RequestView(
        user=content_text(conversation[last_user]["content"]),
        system="\n".join(s for s in system if s),
        context="\n".join(t for t in earlier if t)[-CONTEXT_CHARS:],
        has_tools=request.offers_tools() or in_tool_exchange,
        non_text_parts=tuple(parts),
        response_format=request.response_format_dict(),
        wants_logprobs=bool(request.logprobs) or request.top_logprobs is not None,
    )


class TierwiseInfo(BaseModel):
    """Routing metadata: the ``tierwise`` field of every response."""

    tier: int
    model: str
    task: str
    reason: str
    confidence: float
    escalated_from: int | None = None
    # Why it left the tier it was first given: tier1_unsure, tier2_timeout, tier2_low_confidence, ...
    escalation_cause: str | None = None
    cost_usd: float | None = None
    baseline_cost_usd: float | None = None
    conversation_id: str | None = None
    result: dict | None = None
    scores: dict | None = None
    # Set when tier 1 or 2 answered although it was unsure, because no higher tier could answer.
    low_confidence: bool | None = None
    # Tier 2: the answer's calibrated confidence (from its token log-probabilities).
    answer_confidence: float | None = None
    # Tier 2: older messages replaced by a summary to fit the model's window (absent: none).
    summarised_messages: int | None = None
    # Tier 3 read the conversation with its PII replaced by placeholders (the tenant's policy), restored here.
    pii_redacted: bool | None = None


class Usage(BaseModel):
    """Token counts."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    """The answer message."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[dict] | None = None
    refusal: str | None = None


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
    # Pieces of tool calls, as the provider streams them (by index: id and name first, then arguments).
    tool_calls: list[dict] | None = None


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
    reply: str | None = None
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
