"""Tier 3's client: forward requests to frontier OpenAI-compatible providers.

Each provider gets its own `openai.AsyncOpenAI` client, whose built-in retries (exponential backoff with
jitter, honouring Retry-After) handle transient 429/5xx/timeouts. When a provider still fails after its
retries, the request fails over to the next provider in order, and a per-provider circuit breaker keeps a
dead provider from being hammered. `Tier3Client` holds all of that logic so it can be tested without Ray;
`deployments/tier3.py` is the thin Ray Serve deployment around it.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import openai

from serve.settings import ProviderSettings

# Key sent to servers that need none: the SDK refuses to build a client without one.
_PLACEHOLDER_KEY = "none"

# Fields the client sets itself; letting caller params override them would break streaming or routing.
_RESERVED_PARAMS = frozenset({"model", "messages", "stream", "stream_options"})

_HOW_TO_CONFIGURE = (
    "Configure tier 3 with a list of OpenAI-compatible providers, each with name, base_url, model and "
    "api_key_env: in configs/tierwise.yaml under `tier3.providers`, or in the environment as "
    "TIERWISE_TIER3__PROVIDERS (JSON list); then export the variable named by api_key_env with the API key."
)


@dataclass
class Completion:
    """A finished tier-3 answer. Token counts are None when the provider reported no usage."""

    content: str
    model: str
    provider: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str
    # What the model asked for instead of (or beside) text: tool calls in OpenAI's shape, and a refusal.
    tool_calls: list[dict] | None = None
    refusal: str | None = None


class Tier3NotConfigured(Exception):
    """No provider is usable: none is listed, or every listed one lacks its API key."""


class Tier3Unavailable(Exception):
    """Tier 3 could not answer.

    `status` is the provider's HTTP status when there was one (None for timeouts, connection errors and
    open breakers); `provider` is the provider that produced the final error, if any.
    """

    def __init__(self, message: str, *, status: int | None = None, provider: str | None = None):
        super().__init__(message)
        self.status = status
        self.provider = provider


class CircuitBreaker:
    """Consecutive-failure breaker: after `threshold` failures in a row it opens for `cooldown_s`, then
    lets one trial request through; the trial's outcome closes it or re-opens it for another cooldown."""

    def __init__(self, threshold: int, cooldown_s: float):
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._failures = 0
        self._opened_at: float | None = None

    def allow(self) -> bool:
        """Whether a request may go to the provider now; consumes the trial when half-open."""
        if self._opened_at is None:
            return True
        now = time.monotonic()
        if now - self._opened_at < self._cooldown_s:
            return False
        # Restart the cooldown so concurrent requests do not all pile onto the trial.
        self._opened_at = now
        return True

    def record_success(self) -> None:
        """Close the breaker."""
        self._failures = 0
        self._opened_at = None

    def record_failure(self) -> None:
        """Count a failure; open (or re-open) the breaker at the threshold."""
        self._failures += 1
        if self._failures >= self._threshold:
            self._opened_at = time.monotonic()


@dataclass
class _Provider:
    spec: ProviderSettings
    client: openai.AsyncOpenAI
    breaker: CircuitBreaker


def _status(exc: openai.APIError) -> int | None:
    return exc.status_code if isinstance(exc, openai.APIStatusError) else None


# The provider refusing Tierwise itself (a bad or revoked key, no access to the model, a model it does not
# serve): not the client's fault, and the next provider may well answer.
PROVIDER_REFUSALS = frozenset({401, 403, 404})


def _is_request_error(exc: openai.APIError) -> bool:
    # 408 is the provider timing out, so it counts as the provider's fault like 429 and 5xx; the refusals
    # above are the provider's too. Any other 4xx would fail the same way on every provider.
    status = _status(exc)
    return status is not None and 400 <= status < 500 and status not in (408, 429, *PROVIDER_REFUSALS)


class Tier3Client:
    """Failover client over an ordered list of OpenAI-compatible providers."""

    def __init__(
        self,
        providers: list[ProviderSettings],
        *,
        breaker_threshold: int = 5,
        breaker_cooldown_s: float = 30.0,
    ):
        """Build one SDK client per provider whose key is available; keys are read from the environment now."""
        self._providers: list[_Provider] = []
        self._missing_keys: list[str] = []
        for spec in providers:
            key = os.environ.get(spec.api_key_env) or None
            if key is None:
                if not spec.allow_no_key:
                    self._missing_keys.append(f"{spec.name} (${spec.api_key_env} is unset)")
                    continue
                key = _PLACEHOLDER_KEY
            client = openai.AsyncOpenAI(
                base_url=spec.base_url, api_key=key, timeout=spec.timeout_s, max_retries=spec.max_retries
            )
            self._providers.append(_Provider(spec, client, CircuitBreaker(breaker_threshold, breaker_cooldown_s)))

    @property
    def configured(self) -> bool:
        """Whether at least one provider is usable."""
        return bool(self._providers)

    def unconfigured_reason(self) -> str | None:
        """Why no provider is usable, with how to configure one; None when one is."""
        if self._providers:
            return None
        missing = f" Providers without a key: {', '.join(self._missing_keys)}." if self._missing_keys else ""
        return f"No tier-3 provider is configured.{missing} {_HOW_TO_CONFIGURE}"

    async def aclose(self) -> None:
        """Close the providers' HTTP connection pools."""
        for provider in self._providers:
            await provider.client.close()

    async def complete(self, messages: list[dict], params: dict, prefer: str | None = None) -> Completion:
        """Answer `messages` with the first provider that succeeds (the one serving model `prefer` first).

        Raises Tier3NotConfigured when no provider is usable and Tier3Unavailable when every provider failed,
        was skipped by its breaker, or rejected the request itself (4xx, without failover).
        """
        extra = _extra_body(params)
        errors: list[str] = []
        last: tuple[openai.APIError, str] | None = None
        for provider in self._candidates(prefer):
            try:
                response = await provider.client.chat.completions.create(
                    model=provider.spec.model, messages=messages, extra_body=extra
                )
            except openai.APIError as exc:
                self._record_error(provider, exc, errors)
                last = (exc, provider.spec.name)
                continue
            provider.breaker.record_success()
            choice = response.choices[0]
            usage = response.usage
            return Completion(
                content=choice.message.content or "",
                model=response.model,
                provider=provider.spec.name,
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                finish_reason=choice.finish_reason or "stop",
                tool_calls=[c.model_dump(exclude_none=True) for c in choice.message.tool_calls]
                if choice.message.tool_calls else None,
                refusal=choice.message.refusal,
            )
        raise self._exhausted(errors, last)

    async def stream(self, messages: list[dict], params: dict, prefer: str | None = None) -> AsyncIterator[dict]:
        """Stream the answer as `{"delta": str}` and `{"tool_calls": [deltas]}` dicts (the first also names
        the answering model), then one `{"done": True, ...}` summary.

        Fails over like `complete`, but only until the first delta is out: after that the client has part of
        an answer, and splicing another provider's answer onto it would be wrong, so a later failure raises
        Tier3Unavailable.
        """
        extra = _extra_body(params)
        errors: list[str] = []
        last: tuple[openai.APIError, str] | None = None
        for provider in self._candidates(prefer):
            name = provider.spec.name
            started = False
            model, finish_reason, usage = provider.spec.model, None, None
            try:
                chunks = await provider.client.chat.completions.create(
                    model=provider.spec.model,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_body=extra,
                )
                async with chunks:
                    async for chunk in chunks:
                        model = chunk.model or model
                        usage = chunk.usage or usage
                        if not chunk.choices:
                            continue
                        choice = chunk.choices[0]
                        finish_reason = choice.finish_reason or finish_reason
                        if choice.delta and choice.delta.content:
                            # The first delta names the model answering: after a failover, not the first
                            # provider's.
                            yield {"delta": choice.delta.content} | ({} if started else {"model": model})
                            started = True
                        if choice.delta and choice.delta.tool_calls:
                            yield ({"tool_calls": [c.model_dump(exclude_none=True) for c in choice.delta.tool_calls]}
                                   | ({} if started else {"model": model}))
                            started = True
            except openai.APIError as exc:
                if started:
                    provider.breaker.record_failure()
                    raise Tier3Unavailable(
                        f"tier-3 provider {name} failed mid-stream: {exc}", status=_status(exc), provider=name
                    ) from exc
                self._record_error(provider, exc, errors)
                last = (exc, name)
                continue
            provider.breaker.record_success()
            yield {
                "done": True,
                "model": model,
                "provider": name,
                "finish_reason": finish_reason or "stop",
                "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": usage.completion_tokens if usage else None,
            }
            return
        raise self._exhausted(errors, last)

    def _candidates(self, prefer: str | None = None) -> Iterator[_Provider]:
        """Yield providers in order (those serving model `prefer` first, for a client that named it),
        lazily, so a half-open breaker's trial is only spent when reached."""
        reason = self.unconfigured_reason()
        if reason:
            raise Tier3NotConfigured(reason)
        for provider in sorted(self._providers, key=lambda p: p.spec.model != prefer):
            if provider.breaker.allow():
                yield provider

    def _record_error(self, provider: _Provider, exc: openai.APIError, errors: list[str]) -> None:
        """Feed the breaker, or raise at once when the request itself is at fault."""
        name = provider.spec.name
        if _is_request_error(exc):
            # The provider answered, so it is healthy.
            provider.breaker.record_success()
            raise Tier3Unavailable(
                f"tier-3 provider {name} rejected the request: {exc}", status=_status(exc), provider=name
            ) from exc
        provider.breaker.record_failure()
        errors.append(f"{name}: {type(exc).__name__}: {exc}")

    def _exhausted(self, errors: list[str], last: tuple[openai.APIError, str] | None) -> Tier3Unavailable:
        if last is None:
            names = ", ".join(p.spec.name for p in self._providers)
            return Tier3Unavailable(f"all tier-3 providers are circuit-open: {names}")
        exc, name = last
        refused = " (it refused Tierwise's own key or model)" if _status(exc) in PROVIDER_REFUSALS else ""
        return Tier3Unavailable(
            f"all tier-3 providers failed; last error from {name}{refused}: {exc} (all errors: {'; '.join(errors)})",
            status=_status(exc),
            provider=name,
        )


def _extra_body(params: dict) -> dict:
    # Sent verbatim as JSON rather than as SDK keyword arguments, so provider-specific parameters
    # (top_k, repetition_penalty, ...) pass through instead of failing as unexpected arguments.
    return {k: v for k, v in (params or {}).items() if v is not None and k not in _RESERVED_PARAMS}
