"""The gateway's tier-3 logic: call the forwarder (whole or streamed), turn what the provider sent into an
:class:`~serve.api.turns.Answer`, restore redacted PII in it, and say whose fault a failure was."""

from __future__ import annotations

from collections.abc import AsyncIterator

from serve.api.errors import ApiError
from serve.api.protocol import TierwiseInfo
from serve.api.serving_models import ServingModels
from serve.api.streaming import Piece
from serve.api.turns import Answer, Turn, merge_tool_call_deltas
from serve.tenancy.accounting import Accounting
from serve.tenancy.pii import Redactor, StreamRestorer
from serve.tiers.tier3_client import PROVIDER_REFUSALS, Completion, Tier3Unavailable


class Tier3Service:
    """Tier 3 behind the forwarder's handle (``complete.remote`` and ``options(stream=True).stream.remote``)."""

    def __init__(self, forwarder, models: ServingModels, accounting: Accounting):
        self.forwarder, self.models, self.accounting = forwarder, models, accounting

    def check_configured(self, info: TierwiseInfo) -> None:
        """A 503 that says how to configure tier 3, when no provider is."""
        if self.models.tier3_unconfigured:
            raise ApiError(503, self.models.tier3_unconfigured, "service_unavailable", code="tier3_not_configured",
                           tierwise=info)

    async def complete(self, turn: Turn, info: TierwiseInfo, messages: list[dict],
                       redactor: Redactor | None) -> Answer:
        """The provider's whole answer to ``messages`` (the turn's, PII redacted when ``redactor`` is set),
        with the PII put back."""
        self.check_configured(info)
        request = turn.request
        try:
            completion: Completion = await self.forwarder.complete.remote(messages, request.generation_params(),
                                                                          self._pinned(turn))
        except Tier3Unavailable as exc:
            raise self.upstream_error(exc, info) from exc
        model = completion.model or info.model
        content, tool_calls = completion.content, completion.tool_calls
        if redactor is not None:
            restored = redactor.restore_message({"content": content, "tool_calls": tool_calls})
            content, tool_calls = restored["content"], restored["tool_calls"]
        return Answer(content, model,
                      completion.prompt_tokens or await self.accounting.count_prompt(model, messages),
                      completion.completion_tokens or await self.accounting.count(model, completion.content),
                      finish_reason=completion.finish_reason or "stop", tool_calls=tool_calls,
                      refusal=completion.refusal)

    async def stream(self, turn: Turn, info: TierwiseInfo, messages: list[dict],
                     redactor: Redactor | None) -> AsyncIterator[Piece]:
        """The provider's answer as pieces. Failures before its first event are raised here, as an HTTP error
        rather than a broken stream; the answering provider's model then names the stream everywhere."""
        self.check_configured(info)
        stream = self.forwarder.options(stream=True).stream.remote(messages, turn.request.generation_params(),
                                                                  self._pinned(turn))
        try:
            first = await stream.__anext__()
        except Tier3Unavailable as exc:
            raise self.upstream_error(exc, info) from exc
        except StopAsyncIteration as exc:
            raise ApiError(502, "the tier-3 provider closed the stream without an answer", "upstream_error",
                           tierwise=info) from exc
        info.model = first.get("model") or info.model
        return self._pieces(first, stream, messages, redactor)

    async def _pieces(self, first: dict, stream, messages: list[dict],
                      redactor: Redactor | None) -> AsyncIterator[Piece]:
        """Text deltas (str), tool-call deltas (list) and, last, the whole answer."""
        parts: list[str] = []
        calls: dict[int, dict] = {}
        restorer = StreamRestorer(redactor) if redactor is not None else None
        event = first
        while True:
            if event.get("done"):
                if restorer is not None:
                    tail = restorer.flush()
                    if tail:
                        yield tail
                content = "".join(parts)
                model = event.get("model") or self.models.model_of(3)
                tool_calls = [calls[i] for i in sorted(calls)] or None
                if redactor is not None:
                    restored = redactor.restore_message({"content": content, "tool_calls": tool_calls})
                    tool_calls = restored["tool_calls"]
                yield Answer(content if redactor is None else redactor.restore(content), model,
                             event.get("prompt_tokens") or await self.accounting.count_prompt(model, messages),
                             event.get("completion_tokens") or await self.accounting.count(model, content),
                             finish_reason=event.get("finish_reason") or "stop", tool_calls=tool_calls)
                return
            if "tool_calls" in event:
                merge_tool_call_deltas(calls, event["tool_calls"])
                if redactor is None:
                    yield event["tool_calls"]
            else:
                parts.append(event["delta"])
                out = event["delta"] if restorer is None else restorer.feed(event["delta"])
                if out:
                    yield out
            try:
                event = await stream.__anext__()
            except StopAsyncIteration:
                event = {"done": True}
            if event.get("done") and redactor is not None and calls:
                # A redacted request's tool calls go out whole and restored once their arguments are complete,
                # rather than as restored pieces: OpenAI clients join the pieces of a call however they come.
                restored = redactor.restore_message({"tool_calls": [calls[i] for i in sorted(calls)]})
                yield [{"index": i, **call} for i, call in enumerate(restored["tool_calls"])]

    @staticmethod
    def _pinned(turn: Turn) -> str | None:
        """A client that named a tier-3 model gets the provider serving it first."""
        return turn.request.model if turn.forced_tier == 3 else None

    @staticmethod
    def upstream_error(exc: Tier3Unavailable, info: TierwiseInfo) -> ApiError:
        """The error a client sees for a tier-3 failure.

        The client's own error is theirs to fix (its 4xx); a provider that refused Tierwise, throttled it or
        failed is the gateway's upstream problem (502)."""
        status = exc.status if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (
            429, *PROVIDER_REFUSALS) else 502
        kind = "invalid_request_error" if status < 500 else "upstream_error"
        return ApiError(status, f"tier 3 failed: {exc}", kind, code="tier3_failed", tierwise=info)
