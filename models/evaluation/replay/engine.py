"""Tier 2's recorded engine: an ``LLMEngine`` that Ray Serve LLM's ``LLMServer`` runs in place of vLLM.

It answers a recorded prompt with the recorded response of the model it stands for (the models file's
``model_id``, e.g. ``mixtral-8x7b-instruct``), streamed or not, with token counts from the gateway's own
counter for that model (:class:`serve.tenancy.tokens.Tokenizers`). A prompt it has no recording of gets an
error response (404), never an invented answer: the gateway escalates it as it would any engine error.

Configured per model in a tier-2 models file (``configs/replay/tier2.yaml``)::

    engine_cls: models.evaluation.replay.engine:RecordedEngine
    llm_config:
      experimental_configs: {recordings: <recordings.jsonl>}

Without ``experimental_configs.recordings`` it reads every recording in the data folder at start (about a second).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path

from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionResponse,
    ErrorInfo,
    ErrorResponse,
    TokenizeResponse,
)
from ray.llm._internal.serve.core.engine.protocol import LLMEngine

from models.evaluation.replay.answers import Answerer, response_body, stream_events
from models.evaluation.replay.recordings import NoRecording, Recordings, load_recordings


class RecordedEngine(LLMEngine):
    """Answers from recordings; the ``LLMServer`` around it, its deployment and handles are Ray's own."""

    def __init__(self, llm_config):
        super().__init__(llm_config)
        self.model = llm_config.model_id
        self.max_model_len = int(llm_config.engine_kwargs.get("max_model_len", 4096))
        self._source = (llm_config.experimental_configs or {}).get("recordings")
        self.answerer: Answerer | None = None

    async def start(self) -> None:
        """Read the recordings."""
        self.answerer = Answerer(Recordings.load(Path(self._source)) if self._source else load_recordings())

    async def check_health(self) -> None:
        """Healthy once the recordings are read."""
        if self.answerer is None:
            raise RuntimeError("the recordings are not loaded")

    def _error(self, message: str, code: int) -> ErrorResponse:
        return ErrorResponse(error=ErrorInfo(message=message, type="NotFoundError" if code == 404 else "BadRequest",
                                             code=code))

    async def chat(self, request, raw_request_info=None) -> AsyncGenerator:
        """The recorded answer, as one response or as SSE chunks ending with usage and ``[DONE]``."""
        messages = _messages(request)
        try:
            content, usage = self.answerer.answer(self.model, messages)
        except NoRecording as exc:
            yield self._error(str(exc), 404)
            return
        if not request.stream:
            yield ChatCompletionResponse.model_validate(response_body(request.model, content, usage))
            return
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        for event in stream_events(request.model, content, usage, include_usage):
            yield event

    async def tokenize(self, request, raw_request_info=None) -> AsyncGenerator:
        """The prompt's token count by the stand-in model's counter; the ids are not recorded (empty)."""
        counter = self.answerer.tokenizers.for_model(self.model)
        if getattr(request, "messages", None) is not None:
            count = counter.count_messages(_messages(request))
        else:
            count = counter.count(request.prompt)
        yield TokenizeResponse(count=count, max_model_len=self.max_model_len, tokens=[])

    async def completions(self, request, raw_request_info=None) -> AsyncGenerator:
        """Only chat is recorded."""
        yield self._error("the recorded engine answers chat completions only", 400)

    async def embeddings(self, request, raw_request_info=None) -> AsyncGenerator:
        """Only chat is recorded."""
        yield self._error("the recorded engine answers chat completions only", 400)

    async def transcriptions(self, request, raw_request_info=None) -> AsyncGenerator:
        """Only chat is recorded."""
        yield self._error("the recorded engine answers chat completions only", 400)

    async def resolve_lora(self, lora_model) -> None:
        """Recordings have no adapters: a models file that names some for this engine is an error."""
        raise ValueError(f"the recorded engine of {self.model} has no LoRA adapters")

    async def reset_prefix_cache(self) -> None:
        """No cache: answers are read, not computed."""

    def routing_stats(self) -> dict:
        """No KV cache to route by."""
        return {}


def _messages(request) -> list[dict]:
    # vLLM's request models keep messages as plain dicts or as pydantic models, depending on the part type.
    return [m if isinstance(m, dict) else m.model_dump() for m in request.messages]
