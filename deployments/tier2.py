"""Tier 2: self-hosted models on vLLM, served by Ray Serve LLM in the same application as the gateway.

Each configured model becomes one ``LLMServer`` deployment built from its ``LLMConfig``
(:func:`build_tier2`), autoscaled by Serve. A model the cluster cannot place (it asks for GPUs the
cluster does not have) is left out and reported (:func:`placement_problem`), so its traffic goes where
the policy sends it. The gateway reaches the deployments through handles, with no HTTP hop:
:class:`Tier2Pool` calls them, reads the engine's answers and token log-probabilities, and turns every
way tier 2 can fail (an engine error, a dead replica, a timeout, a full queue, an unsure answer) into one
:class:`Tier2Failure` that says why, so the gateway can escalate.
"""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
import functools
import json
import math
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from serve.settings import AdapterSettings, LogprobCalibration, Tier2ModelSettings, Tier2Settings

# Settings a production deployment must not leave to Ray Serve LLM's or vLLM's defaults.
REQUIRED_FIELDS = (
    ("model_loading_config", "model_id"),
    ("engine_kwargs", "max_model_len"),
    ("engine_kwargs", "enable_prefix_caching"),
    ("deployment_config", "max_ongoing_requests"),
    ("deployment_config", "max_queued_requests"),
    ("deployment_config", "autoscaling_config", "min_replicas"),
    ("deployment_config", "autoscaling_config", "max_replicas"),
    ("deployment_config", "autoscaling_config", "target_ongoing_requests"),
)
GPU_REQUIRED_FIELDS = (("engine_kwargs", "gpu_memory_utilization"),)
REMOTE_PREFIXES = ("s3://", "gs://", "abfss://", "azure://")
# The prompt Tier 2 summarises older turns with when a conversation outgrows a model's window.
SUMMARY_INSTRUCTION = (
    "Summarise the conversation below for the assistant that continues it. Keep every fact, name, number, "
    "decision and open question; drop pleasantries. Write at most {words} words."
)


def _get(data: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def check_llm_config(model: "Tier2ModelSettings") -> None:
    """Raise ValueError naming the field when ``model.llm_config`` misses a required setting or is not a
    valid ``LLMConfig``."""
    required = REQUIRED_FIELDS + (GPU_REQUIRED_FIELDS if model.on_gpu else ())
    for path in required:
        if _get(model.llm_config, path) is None:
            raise ValueError(f"llm_config.{'.'.join(path)} must be set")
    if model.adapters and not model.adapters_path:
        raise ValueError("adapters need adapters_path (a folder or bucket URI with one sub-folder per adapter)")
    try:
        to_llm_config(model)
    except ValidationError as exc:
        problems = "; ".join(f"llm_config.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(problems) from None


def to_llm_config(model: "Tier2ModelSettings"):
    """The model's ``ray.serve.llm.LLMConfig``, with LoRA multiplexing switched on when it has adapters."""
    from ray.serve.llm import LLMConfig

    config = copy.deepcopy(model.llm_config)
    if model.adapters:
        remote = model.adapters_path.startswith(REMOTE_PREFIXES)
        lora = {"max_num_adapters_per_replica": len(model.adapters), **config.get("lora_config", {})}
        if remote:
            lora["dynamic_lora_loading_path"] = model.adapters_path
        config["lora_config"] = lora
        config["engine_kwargs"] = {"enable_lora": True, "max_loras": lora["max_num_adapters_per_replica"],
                                   **config["engine_kwargs"]}
    return LLMConfig(**config)


def placement_problem(model: "Tier2ModelSettings", resources: dict[str, float]) -> str | None:
    """Why the cluster (its total ``resources``, as ``ray.cluster_resources()`` gives them) cannot place
    the model's minimum replicas, or None when it can."""
    if not model.on_gpu:
        return None
    engine = model.llm_config["engine_kwargs"]
    per_replica = int(engine.get("tensor_parallel_size", 1)) * int(engine.get("pipeline_parallel_size", 1))
    replicas = max(1, int(model.llm_config["deployment_config"]["autoscaling_config"]["min_replicas"]))
    kind = model.llm_config.get("accelerator_type")
    # Ray marks each node's GPU type as a resource (``accelerator_type:L4``); without it, no GPU fits.
    have = resources.get("GPU", 0) if not kind or resources.get(f"accelerator_type:{kind}") else 0
    if have >= per_replica * replicas:
        return None
    what = f"{per_replica} GPU{'s' if per_replica > 1 else ''}" + (f" of type {kind}" if kind else "")
    return (f"needs {what} per replica ({replicas} replica{'s' if replicas > 1 else ''} at least); the cluster has "
            f"{int(have)}")


class LocalLoraLoader:
    """Resolves adapters from a local folder (one sub-folder per adapter) for Serve's multiplexing.

    Ray Serve LLM's own loader downloads from object storage only; with a local ``adapters_path`` this one
    is injected instead (``LLMServer``'s ``model_downloader``), so a single machine serves adapters too.
    """

    def __init__(self, root: str, download_timeout_s: float | None = None, max_tries: int = 1):
        self.root = root

    async def load_model_from_config(self, lora_model_id: str, llm_config):
        """The adapter's folder as Serve's multiplex config; a missing adapter is a clear error."""
        from ray.llm._internal.common.models import global_id_manager
        from ray.llm._internal.common.utils.lora_utils import get_lora_id
        from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig

        path = os.path.join(self.root, get_lora_id(lora_model_id))
        if not os.path.isfile(os.path.join(path, "adapter_config.json")):
            raise ValueError(f"adapter {lora_model_id!r}: no adapter_config.json in {path}")
        return DiskMultiplexConfig(model_id=lora_model_id, max_total_tokens=None, local_path=path,
                                   lora_assigned_int_id=global_id_manager.next())


def _server_class():
    """Ray Serve LLM's ``LLMServer`` with the engine's tokenizer service wired up.

    Ray 2.60 looks the service up under vLLM's old state attribute (``openai_serving_tokenization``);
    vLLM 0.32 names it ``serving_tokenization``, so the stock server answers every tokenize call with "not
    supported". The gateway counts prompt tokens with the model's own tokenizer through that call.
    """
    from ray.serve.llm import LLMServer

    class Tier2Server(LLMServer):
        async def start(self):
            await super().start()
            engine = self.engine
            if getattr(engine, "_oai_serving_tokenization", None) is None:
                engine._oai_serving_tokenization = getattr(getattr(engine, "_app_state", None),
                                                           "serving_tokenization", None)

    return Tier2Server


def deployment_name(model: "Tier2ModelSettings") -> str:
    """The Serve deployment of a model (unique in the application, readable in ``serve status``)."""
    return "Tier2:" + model.name.replace("/", "--").replace(".", "_")


def plan_placement(settings: "Tier2Settings", resources: dict[str, float]):
    """The models to deploy, and why each other model is left out: none is with ``tier2.placement:
    autoscaler`` (the autoscaler adds the nodes), else those the cluster's ``resources`` cannot hold now."""
    placed, unplaced = [], {}
    for model in settings.models:
        problem = placement_problem(model, resources) if settings.placement == "cluster" else None
        if problem:
            unplaced[model.name] = problem
        else:
            placed.append(model)
    return placed, unplaced


def build_tier2(settings: "Tier2Settings", resources: dict[str, float]):
    """The tier-2 deployments the cluster can place, by model id, and why each other model is left out."""
    from ray.serve.llm import build_llm_deployment

    placed, unplaced = plan_placement(settings, resources)
    apps = {}
    for model in placed:
        bind = {}
        if model.adapters and not model.adapters_path.startswith(REMOTE_PREFIXES):
            bind["model_downloader"] = functools.partial(LocalLoraLoader, os.path.abspath(model.adapters_path))
        apps[model.name] = build_llm_deployment(to_llm_config(model), name_prefix="",
                                                override_serve_options={"name": deployment_name(model)},
                                                bind_kwargs=bind, deployment_cls=_server_class())
    return apps, unplaced


# -- the gateway's side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tier2Target:
    """What one request is sent to: a base model, or one of its adapters."""

    model: "Tier2ModelSettings"
    adapter: "AdapterSettings | None" = None

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


def answer_confidence(logprobs: list[float], calibration: "LogprobCalibration | None") -> float:
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

    def __init__(self, settings: "Tier2Settings", handles: dict, unplaced: dict[str, str]):
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
