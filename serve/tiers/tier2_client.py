"""The gateway's tier-2 client: calls the ``LLMServer`` deployments through their handles (no HTTP hop),
reads the engine's answers and token log-probabilities, and turns every way tier 2 can fail (an engine error,
a dead replica, a timeout, a full queue, an unsure answer) into one :class:`Tier2Failure` that says why, so
the gateway can escalate.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pydantic import ValidationError

from deployments.config import AdapterSettings, LogprobCalibration, Tier2ModelSettings, Tier2Settings

# The prompt Tier 2 summarises older turns with when a conversation outgrows a model's window.
SUMMARY_INSTRUCTION = (
    "Summarise the conversation below for the assistant that continues it. Keep every fact, name, number, "
    "decision and open question; drop pleasantries. Write at most {words} words."
)


@dataclass(frozen=True)
class Tier2Target:
    """What one request is sent to: a base model, or one of its adapters."""

    model: Tier2ModelSettings
    adapter: AdapterSettings | None = None

    @property
    def served_id(self) -> str:
        """The id vLLM serves it under (``base:adapter`` for an adapter)."""
        return f"{self.model.name}:{self.adapter.name}" if self.adapter else self.model.name

    @property
    def tasks(self) -> list[str]:
        """The router tasks it fits (empty: any)."""
        return self.adapter.tasks if self.adapter else self.model.tasks

    @property
    def min_confidence(self) -> float:
        """Its calibrated keep threshold."""
        if self.adapter and self.adapter.min_confidence is not None:
            return self.adapter.min_confidence
        return self.model.min_confidence


class Tier2Failure(Exception):
    """Tier 2 did not give a usable answer. ``cause`` is one of failure, timeout, overload, rejected,
    too_long, low_confidence; ``status`` the engine's HTTP status when it sent one."""

    def __init__(self, cause: str, message: str, status: int | None = None):
        super().__init__(message)
        self.cause, self.status = cause, status


@dataclass
class Tier2Answer:
    """A finished tier-2 answer."""

    content: str
    model: str
    finish_reason: str
    prompt_tokens: int | None
    completion_tokens: int | None
    confidence: float


def answer_confidence(logprobs: list[float], calibration: LogprobCalibration | None) -> float:
    """The probability that an answer is good, from its tokens' log-probabilities: Platt scaling of their
    mean when calibrated, else their geometric-mean probability (1.0 for an empty answer)."""
    if not logprobs:
        return 1.0
    mean = sum(logprobs) / len(logprobs)
    if calibration is None:
        return math.exp(mean)
    return 1.0 / (1.0 + math.exp(-(calibration.slope * mean + calibration.intercept)))


class StreamParser:
    """Events from the batches the engine streams (SSE text, or an error): ``{"delta", "logprobs"}`` per
    chunk with content, ``{"finish_reason"}``, ``{"usage"}``; an error raises :class:`Tier2Failure`.

    A batch may end in the middle of an event, so text is kept until its event's blank line arrives."""

    def __init__(self):
        self._pending = ""

    def feed(self, batch) -> list[dict]:
        """The events completed by ``batch``."""
        events = []
        for item in batch if isinstance(batch, list) else [batch]:
            if not isinstance(item, str):
                _raise_if_error(item)
                continue
            *complete, self._pending = (self._pending + item).split("\n\n")
            for event in complete:
                events += self._parse(event)
        return events

    @staticmethod
    def _parse(event: str) -> list[dict]:
        events = []
        # SSE lines end at CR or LF only: str.splitlines would also cut at U+2028, U+0085 and the like, which
        # JSON leaves raw inside strings (a model's output may hold them).
        for line in re.split(r"\r\n|\r|\n", event):
            data = line.removeprefix("data: ").strip() if line.startswith("data: ") else None
            if not data or data == "[DONE]":
                continue
            chunk = json.loads(data)
            if "error" in chunk:
                error = chunk["error"]
                raise _engine_error(int(error.get("code") or 500), error.get("message"), error.get("param"))
            if chunk.get("usage"):
                events.append({"usage": chunk["usage"]})
            for choice in chunk.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    logprobs = [t["logprob"] for t in ((choice.get("logprobs") or {}).get("content") or [])]
                    events.append({"delta": delta, "logprobs": logprobs})
                if choice.get("finish_reason"):
                    events.append({"finish_reason": choice["finish_reason"]})
        return events


# The parameters vLLM names when a prompt exceeds the model's context length.
_TOO_LONG_PARAMS = ("input_tokens", "input_text")


def _engine_error(code: int, message, param) -> Tier2Failure:
    if param in _TOO_LONG_PARAMS:
        return Tier2Failure("too_long", f"the engine answered: {message}", code)
    return Tier2Failure("rejected" if 400 <= code < 500 else "failure", f"the engine answered: {message}", code)


def _raise_if_error(item) -> None:
    error = getattr(item, "error", None)
    if error is not None:
        raise _engine_error(int(getattr(error, "code", 500) or 500), getattr(error, "message", error),
                            getattr(error, "param", None))


class Tier2Pool:
    """The gateway's view of tier 2: the placed models and their adapters, their load, and calls to them.

    ``handles`` maps a model id to its ``LLMServer`` deployment handle; ``unplaced`` maps each model the
    cluster could not place to the reason.
    """

    def __init__(self, settings: Tier2Settings, handles: dict, unplaced: dict[str, str]):
        self.settings, self.handles, self.unplaced = settings, handles, dict(unplaced)
        self.targets = [t for m in settings.models if m.name in handles
                        for t in [Tier2Target(m)] + [Tier2Target(m, a) for a in m.adapters]]
        self._in_flight: Counter[str] = Counter()
        self._streaming = {name: h.options(stream=True) for name, h in handles.items()}

    def target(self, served_id: str) -> Tier2Target | None:
        """The target a client names, or None."""
        return next((t for t in self.targets if t.served_id == served_id), None)

    def load(self, target: Tier2Target) -> float:
        """This gateway's in-flight requests to the target's model over what its replicas take at most."""
        deployment = target.model.llm_config["deployment_config"]
        capacity = deployment["max_ongoing_requests"] * deployment["autoscaling_config"]["max_replicas"]
        return self._in_flight[target.model.name] / max(capacity, 1)

    async def ready(self) -> dict[str, bool]:
        """Each placed model's engine health (Serve's health check of the replica)."""
        async def one(name: str) -> bool:
            try:
                await asyncio.wait_for(self.handles[name].check_health.remote(), timeout=5.0)
                return True
            except Exception:  # noqa: BLE001 - any failure means "not ready"
                return False

        names = list(self.handles)
        return dict(zip(names, await asyncio.gather(*(one(n) for n in names))))

    async def count_tokens(self, target: Tier2Target, messages: list[dict]) -> int:
        """Prompt tokens of ``messages`` by the model's own tokenizer and chat template."""
        from ray.llm._internal.serve.core.configs.openai_api_models import TokenizeChatRequest

        request = TokenizeChatRequest(model=target.model.name, messages=messages, add_generation_prompt=True)
        try:
            async for response in self._streaming[target.model.name].tokenize.remote(request, None):
                _raise_if_error(response)
                return int(response.count)
        except Tier2Failure as failure:
            if failure.cause == "too_long":
                # vLLM refuses to count past the window; all the caller needs is "more than fits".
                return target.model.context_window + 1
            raise
        except Exception as exc:  # noqa: BLE001 - a dead replica or engine: tier 2 failed
            raise Tier2Failure("failure", f"tier 2 could not count tokens: {type(exc).__name__}: {exc}") from exc
        raise Tier2Failure("failure", "tier 2 returned no token count")

    def _request(self, target: Tier2Target, messages: list[dict], params: dict, stream: bool):
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        # Log-probabilities of the chosen tokens (not alternatives) feed the confidence; the client only
        # sees what its own response asks for.
        body = {**params, "model": target.served_id, "messages": messages, "stream": stream, "logprobs": True,
                "top_logprobs": params.get("top_logprobs") or 0}
        if stream:
            body["stream_options"] = {"include_usage": True}
        try:
            return ChatCompletionRequest(**body)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise Tier2Failure("rejected", f"{'.'.join(map(str, first['loc']))}: {first['msg']}", 400) from None

    def _handle(self, target: Tier2Target):
        handle = self._streaming[target.model.name]
        return handle.options(multiplexed_model_id=target.served_id) if target.adapter else handle

    async def complete(self, target: Tier2Target, messages: list[dict], params: dict) -> Tier2Answer:
        """One non-streamed answer within ``timeout_s``."""
        request = self._request(target, messages, params, stream=False)
        name = target.model.name
        self._in_flight[name] += 1
        try:
            response = await asyncio.wait_for(self._first(self._handle(target).chat.remote(request, None)),
                                              timeout=self.settings.timeout_s)
        except asyncio.TimeoutError as exc:
            raise Tier2Failure("timeout",
                               f"no answer from {target.served_id} within {self.settings.timeout_s:g} s") from exc
        except Tier2Failure:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever broke, the request escalates
            raise _call_failure(target, exc) from exc
        finally:
            self._in_flight[name] -= 1
        _raise_if_error(response)
        choice = response.choices[0]
        logprobs = [t.logprob for t in (choice.logprobs.content or [])] if choice.logprobs else []
        usage = response.usage
        return Tier2Answer(choice.message.content or "", target.served_id, choice.finish_reason or "stop",
                           usage.prompt_tokens if usage else None, usage.completion_tokens if usage else None,
                           answer_confidence(logprobs, target.model.calibration))

    @staticmethod
    async def _first(generator):
        async for item in generator:
            return item
        raise Tier2Failure("failure", "the engine closed the call without an answer")

    async def stream(self, target: Tier2Target, messages: list[dict], params: dict) -> AsyncIterator[dict]:
        """The engine's stream as events (see :class:`StreamParser`); the first must come within
        ``first_token_timeout_s``. Failures raise :class:`Tier2Failure`."""
        request = self._request(target, messages, params, stream=True)
        name = target.model.name
        self._in_flight[name] += 1
        generator = self._handle(target).chat.remote(request, None)
        parser = StreamParser()
        try:
            first = True
            while True:
                try:
                    if first:
                        batch = await asyncio.wait_for(generator.__anext__(), self.settings.first_token_timeout_s)
                    else:
                        batch = await generator.__anext__()
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError as exc:
                    raise Tier2Failure("timeout", f"no token from {target.served_id} within "
                                                  f"{self.settings.first_token_timeout_s:g} s") from exc
                except Tier2Failure:
                    raise
                except Exception as exc:  # noqa: BLE001 - whatever broke, the caller decides what it costs
                    raise _call_failure(target, exc) from exc
                first = False
                for event in parser.feed(batch):
                    yield event
        finally:
            self._in_flight[name] -= 1
            generator.cancel()


def _call_failure(target: Tier2Target, exc: Exception) -> Tier2Failure:
    from ray.serve.exceptions import BackPressureError

    if isinstance(exc, BackPressureError):
        bound = target.model.llm_config["deployment_config"]["max_queued_requests"]
        return Tier2Failure("overload", f"{target.model.name} is overloaded: its queue is full "
                                        f"(max_queued_requests={bound})")
    return Tier2Failure("failure", f"{target.served_id} failed: {type(exc).__name__}: {str(exc)[:300]}")


class EventPump:
    """Reads an event stream in its own task, so a reader can wait with a timeout without cancelling
    (and so breaking) the stream itself."""

    def __init__(self, events: AsyncIterator[dict]):
        self._queue: asyncio.Queue = asyncio.Queue()
        self._events = events
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for event in self._events:
                self._queue.put_nowait(("event", event))
            self._queue.put_nowait(("end", None))
        except Exception as exc:  # noqa: BLE001 - handed to the reader, who decides what it costs
            self._queue.put_nowait(("error", exc))

    async def get(self, timeout: float | None = None) -> dict:
        """The next event; StopAsyncIteration at the end, TimeoutError after ``timeout`` seconds, and the
        stream's own exception when it failed."""
        kind, value = await asyncio.wait_for(self._queue.get(), timeout)
        if kind == "end":
            self._queue.put_nowait((kind, value))
            raise StopAsyncIteration
        if kind == "error":
            self._queue.put_nowait((kind, value))
            raise value
        return value

    def __aiter__(self) -> "EventPump":
        return self

    async def __anext__(self) -> dict:
        return await self.get()

    async def aclose(self) -> None:
        """Stop reading (the stream's generator is closed, which cancels the engine's request)."""
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        closer = getattr(self._events, "aclose", None)
        if closer is not None:
            await closer()


async def hold_back(events: EventPump, tokens: int, max_ms: int) -> tuple[list[dict], bool]:
    """Read ``events`` until ``tokens`` content events have arrived, the stream ends or ``max_ms`` pass
    after the first one; return what was read and whether the stream ended.

    What is held back is what the confidence is judged on before anything reaches the client.
    """
    held: list[dict] = []
    seen = 0
    loop = asyncio.get_running_loop()
    deadline = None
    while seen < tokens:
        try:
            event = await events.get(None if deadline is None else max(deadline - loop.time(), 0))
        except StopAsyncIteration:
            return held, True
        except TimeoutError:
            break
        held.append(event)
        if "delta" in event:
            seen += 1
            deadline = deadline or loop.time() + max_ms / 1000
    return held, False
