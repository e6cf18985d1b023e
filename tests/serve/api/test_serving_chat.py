"""The chat service without Ray: tier 1's constraints, answers in the form asked, escalation when tier 1 is
unsure or cannot fill the schema, ``when_unsure``, and what reaches tier 3. The router, tier 1 and tier 3 are
stand-ins with the same interface as the deployment clients; the store, limits, ledger, prices and tokenizers
are real (in-process)."""

from __future__ import annotations

import json

import pytest

from models.request import ParsedRequest
from models.router import RouteDecision, RouteInput
from models.tier1 import Tier1Answer as Answer
from serve.api.errors import ApiError, parse_body
from serve.api.protocol import ChatCompletionRequest, TierwiseInfo
from serve.api.turns import Caller, merge_tool_call_deltas
from serve.services import GatewayServices, build_services, tokenizers_for
from serve.settings import TenantPolicy
from serve.store import MemoryConversationStore
from serve.tenancy.ledger import MemoryLedger
from serve.tenancy.limits import MemoryLimiter
from serve.tenancy.pricing import PriceTable
from serve.tiers.tier3 import Tier3Service
from serve.tiers.tier3_client import Completion

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
SENTIMENT = {"label": "positive", "canonical": "positive", "scores": {"positive": 0.9, "negative": 0.1}}
UNCONFIGURED = "No tier-3 provider is configured. Configure tier3.providers."


class Router:
    def __init__(self, decision: RouteDecision):
        self.decision, self.inputs = decision, []

    async def route(self, route_input: RouteInput) -> RouteDecision:
        self.inputs.append(route_input)
        return self.decision

    async def ready(self) -> bool:
        return True


class Tier1:
    def __init__(self, answer: Answer):
        self.answer_, self.requests = answer, []

    async def answer(self, request) -> Answer:
        self.requests.append(request)
        return self.answer_

    async def ready(self) -> bool:
        return True


class _Remote:
    def __init__(self, fn):
        self.remote = fn


class Tier3:
    """The forwarder's handle: ``complete.remote`` and ``options(stream=True).stream.remote``."""

    def __init__(self):
        self.calls = []
        self.complete = _Remote(self._complete)

    async def _complete(self, messages, params, pinned):
        self.calls.append({"messages": messages, "params": params, "pinned": pinned})
        return Completion("frontier answer", "fake-frontier", "fake", 12, 2, "stop")

    def options(self, **_):
        return self


def decision(task="sentiment", tier=1, parsed=None, confidence=0.9) -> RouteDecision:
    return RouteDecision(task, tier, confidence, f"classifier: {task} (p={confidence:.2f})", {task: confidence},
                         parsed=parsed)


class Harness:
    """The gateway's services over stand-ins, and the stand-ins themselves."""

    def __init__(self, settings, prices, tokenizers, answer, route, tier3: bool, tier2=None,
                 policy: TenantPolicy | None = None):
        self.settings, self.router, self.tier1, self.tier3 = settings, Router(route), Tier1(answer), Tier3()
        self.store, self.limiter, self.ledger = MemoryConversationStore(), MemoryLimiter(), MemoryLedger()
        self.services: GatewayServices = build_services(
            settings, router=self.router, tier1=self.tier1, tier3=self.tier3,
            tier3_unconfigured=None if tier3 else UNCONFIGURED, store=self.store, prices=prices,
            limiter=self.limiter, ledger=self.ledger, tokenizers=tokenizers, tier2=tier2)
        self.services.models.tier3_models = ["fake-frontier"] if tier3 else []
        self.chat_service = self.services.chat
        self.caller = Caller(settings.http.tenant, policy or TenantPolicy())

    async def chat(self, req: ChatCompletionRequest, conversation_id=None, caller: Caller | None = None):
        """The response object, as the route returns it."""
        return await self.chat_service.chat(req, conversation_id, caller or self.caller, "req_test")

    async def prepare(self, req: ChatCompletionRequest, conversation_id=None):
        return await self.chat_service.prepare(req, conversation_id, self.caller)

    async def route(self, req: ChatCompletionRequest, conversation_id=None):
        return await self.chat_service.route(req, conversation_id, self.caller)


@pytest.fixture(scope="session")
def tokenizers(settings):
    return tokenizers_for(settings)


@pytest.fixture()
def make(settings, tokenizers):
    """Services over stand-ins: ``make(answer=..., route=..., tier3=True, when_unsure=..., tier2=..., policy=...)``."""
    prices = PriceTable.load(settings.pricing.path)

    def build(answer=Answer("sentiment", SENTIMENT, 0.9), route=None, tier3=True, when_unsure="answer", tier2=None,
              policy=None, settings_=None):
        s = (settings_ or settings).model_copy(deep=True)
        s.tier1.when_unsure = when_unsure
        return Harness(s, prices, tokenizers, answer, route or decision(), tier3, tier2, policy)

    return build


def request(content="Product is great!", **kw) -> ChatCompletionRequest:
    return parse_body(ChatCompletionRequest, {"model": "auto", "messages": [{"role": "user", "content": content}]} | kw)


async def chat(svc: Harness, req: ChatCompletionRequest, conversation_id=None) -> tuple[dict, dict]:
    response = await svc.chat(req, conversation_id)
    return json.loads(response.body), dict(response.headers)


async def test_tier1_answers_in_plain_text(make):
    body, headers = await chat(make(), request())
    assert body["choices"][0]["message"]["content"] == "positive"
    tw = body["tierwise"]
    assert (tw["tier"], tw["task"]) == (1, "sentiment") and "low_confidence" not in tw
    assert tw["result"]["label"] == "positive"
    assert headers["x-tierwise-tier"] == "1" and "x-tierwise-low-confidence" not in headers


async def test_tier1_fills_a_json_schema(make):
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": {
        "type": "object", "properties": {"sentiment": {"enum": ["Positive", "Negative"]}}, "required": ["sentiment"]}}}
    body, _ = await chat(make(), request(response_format=fmt))
    assert json.loads(body["choices"][0]["message"]["content"]) == {"sentiment": "Positive"}
    assert body["tierwise"]["tier"] == 1


async def test_tier1_answers_in_the_users_words(make):
    result = {"entities": [{"text": "Nvidia", "type": "ORG", "start": 0, "end": 6, "confidence": 0.9}],
              "types": ["ORG"]}
    parsed = ParsedRequest("entities", "Nvidia rose.", "List the company names", entity_types=["ORG"],
                           entity_type_names={"ORG": "company names"})
    svc = make(answer=Answer("entities", result, 0.9), route=decision("entities", parsed=parsed))
    body, _ = await chat(svc, request("List the company names: Nvidia rose.", response_format={"type": "json_object"}))
    assert json.loads(body["choices"][0]["message"]["content"]) == {"company names": ["Nvidia"]}
    assert svc.tier1.requests[0].parsed is parsed


async def test_a_schema_tier1_cannot_fill_goes_to_tier3(make):
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": {
        "type": "object", "properties": {"sentiment": {"type": "string"}, "rationale": {"type": "string"}},
        "required": ["sentiment", "rationale"]}}}
    svc = make()
    body, _ = await chat(svc, request(response_format=fmt))
    tw = body["tierwise"]
    assert (tw["tier"], tw["escalated_from"]) == (3, 1)
    assert "cannot answer in the requested format" in tw["reason"] and "rationale" in tw["reason"]
    assert svc.tier3.calls[0]["params"]["response_format"] == fmt


@pytest.mark.parametrize("req,words", [
    (request(tools=[TOOL]), "tools"),
    (request([{"type": "text", "text": "Is this cat cute?"}, IMAGE]), "image_url content"),
    (request(logprobs=True), "logprobs"),
    (request("Das Produkt ist großartig, ich bin sehr zufrieden!"), "looks de"),
])
async def test_requests_tier1_may_not_answer_go_up(make, req, words):
    svc = make()
    body, headers = await chat(svc, req)
    tw = body["tierwise"]
    assert (tw["tier"], tw["escalated_from"]) == (3, 1) and headers["x-tierwise-tier"] == "3"
    assert "tier 1 cannot answer" in tw["reason"] and words in tw["reason"]
    assert body["choices"][0]["message"]["content"] == "frontier answer"
    assert svc.tier1.requests == []


async def test_parts_and_tools_reach_tier3_intact(make):
    svc = make()
    content = [{"type": "text", "text": "What is in this picture?"}, IMAGE]
    await chat(svc, request(content, tools=[TOOL], tool_choice="auto"))
    call = svc.tier3.calls[0]
    assert call["messages"] == [{"role": "user", "content": content}]
    assert call["params"] == {"tools": [TOOL], "tool_choice": "auto"}


async def test_a_blocked_request_pinned_to_tier1_is_a_400(make):
    req = request([{"type": "text", "text": "Is this cat cute?"}, IMAGE], model="tierwise-tier1")
    with pytest.raises(ApiError) as err:
        await chat(make(), req)
    assert (err.value.status, err.value.param, err.value.code) == (400, "model", "unsupported_by_tier1")
    assert "image_url" in err.value.message and "tierwise-tier1" in err.value.message


async def test_a_blocked_request_without_tier3_is_tier3s_503(make):
    with pytest.raises(ApiError) as err:
        await chat(make(tier3=False), request(tools=[TOOL]))
    assert (err.value.status, err.value.code) == (503, "tier3_not_configured")
    assert "tools" in err.value.tierwise.reason


async def test_unsure_goes_to_tier3_when_it_can_answer(make):
    svc = make(answer=Answer("sentiment", SENTIMENT, 0.55, True, "sentiment confidence 0.55 < 0.70"))
    body, _ = await chat(svc, request())
    assert (body["tierwise"]["tier"], body["tierwise"]["escalated_from"]) == (3, 1)
    assert "tier 1 unsure" in body["tierwise"]["reason"]


async def test_unsure_without_tier3_answers_with_low_confidence(make):
    svc = make(answer=Answer("sentiment", SENTIMENT, 0.55, True, "sentiment confidence 0.55 < 0.70"), tier3=False)
    body, headers = await chat(svc, request())
    tw = body["tierwise"]
    assert body["choices"][0]["message"]["content"] == "positive"
    assert (tw["tier"], tw["low_confidence"]) == (1, True)
    assert "no higher tier can answer" in tw["reason"]
    assert headers["x-tierwise-low-confidence"] == "true"


async def test_unsure_without_tier3_refuses_when_configured_to(make):
    svc = make(answer=Answer("sentiment", SENTIMENT, 0.55, True, "low"), tier3=False, when_unsure="refuse")
    with pytest.raises(ApiError) as err:
        await chat(svc, request())
    assert (err.value.status, err.value.code) == (503, "tier3_not_configured")
    assert "tier 1 unsure" in err.value.tierwise.reason


async def test_nothing_to_answer_without_tier3_is_a_503_even_when_answering(make):
    svc = make(answer=Answer("classify", {"labels": ["a", "b"]}, 0.0, True, "no label pieces"), tier3=False)
    with pytest.raises(ApiError) as err:
        await chat(svc, request())
    assert err.value.status == 503 and "no label" in err.value.tierwise.reason


async def test_pinned_tier1_gets_its_best_answer_marked(make):
    svc = make(answer=Answer("sentiment", SENTIMENT, 0.55, True, "low"))
    body, headers = await chat(svc, request(model="tierwise-tier1"))
    assert (body["tierwise"]["tier"], body["tierwise"]["low_confidence"]) == (1, True)
    assert headers["x-tierwise-low-confidence"] == "true"


async def test_pinned_tier1_with_a_schema_it_cannot_fill_is_a_400(make):
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": {
        "type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}}}
    with pytest.raises(ApiError) as err:
        await chat(make(), request(model="tierwise-tier1", response_format=fmt))
    assert (err.value.status, err.value.param) == (400, "response_format")


async def test_streamed_tier1_answer(make):
    response = await make().chat(request(stream=True, response_format={"type": "json_object"}))
    events = [e async for e in response.body_iterator]
    chunks = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert json.loads(text) == {"sentiment": "positive"}
    assert chunks[-1]["tierwise"]["tier"] == 1 and events[-1] == "data: [DONE]\n\n"
    # As OpenAI streams: finish_reason null until the last choice chunk, and no usage unless asked for.
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and all("usage" not in c for c in chunks)


async def test_streamed_usage_comes_in_its_own_last_chunk_when_asked_for(make):
    response = await make().chat(request(stream=True, stream_options={"include_usage": True}))
    chunks = [json.loads(e[6:]) for e in [e async for e in response.body_iterator] if e.startswith("data: {")]
    *choice_chunks, usage_chunk = chunks
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0
    assert usage_chunk["tierwise"]["tier"] == 1
    assert choice_chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in choice_chunks)


async def test_route_endpoint_shows_the_blocker(make):
    info = await make().route(request("¿Dónde está mi paquete? Quiero cancelar mi pedido."))
    assert info.tier == 3 and "looks es" in info.reason


async def test_route_input_is_the_newest_user_text_the_system_prompt_and_the_context(make):
    svc = make()
    req = parse_body(ChatCompletionRequest, {"model": "auto", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "Cute?"}]})
    turn = await svc.prepare(req)
    # The system prompt is read with the message (it may hold the instruction), not as earlier context.
    assert svc.chat_service.route_input(turn) == RouteInput("Cute?", "What is this?\nA cat.", "Be brief.")
    assert turn.view.context == "What is this?\nA cat." and turn.view.system == "Be brief."


async def test_a_conversation_keeps_its_parts_and_recognises_a_resend(make):
    # Sure enough to leave tier 3, where the conversation started.
    svc = make(route=decision(confidence=0.95))
    first = [{"type": "text", "text": "What is in this picture?"}, IMAGE]
    body, _ = await chat(svc, request(first), "c1")
    assert body["tierwise"]["tier"] == 3
    resent = parse_body(ChatCompletionRequest, {"model": "auto", "messages": [
        {"role": "user", "content": first}, {"role": "assistant", "content": "frontier answer"},
        {"role": "user", "content": "Product is great!"}]})
    body, _ = await chat(svc, resent, "c1")
    # The image was in an earlier turn: the new turn is plain text, and tier 1 answers it.
    assert body["tierwise"]["tier"] == 1
    stored = await svc.store.load(svc.settings.http.tenant, "c1")
    assert stored[0]["content"] == first and len(stored) == 4


async def test_task_endpoint_reply_is_rendered(make):
    response = await make().services.tasks.task("sentiment", "Product is great!")
    assert (response.reply, response.abstained) == ("positive", False)


def unplaced_tier2(settings):
    """The pool of a cluster without the GPU its one tier-2 model needs."""
    from serve.tiers.tier2_client import Tier2Pool

    return Tier2Pool(settings.tier2, {}, {"qwen2.5-7b-instruct": "needs 1 GPU of type L4 per replica; the cluster has 0"})


async def test_an_unplaced_tier2_model_sends_its_traffic_up_and_says_why(make, settings):
    svc = make(route=decision("generation", tier=2), tier2=unplaced_tier2(settings))
    body, _ = await chat(svc, request("Write a poem about the sea"))
    tw = body["tierwise"]
    assert (tw["tier"], tw["escalated_from"], tw["escalation_cause"]) == (3, 2, "tier2_not_deployed")
    assert "qwen2.5-7b-instruct cannot be placed (needs 1 GPU of type L4" in tw["reason"]
    ready = await svc.services.health.readiness()
    assert ready["tier2_unplaced"] == {"qwen2.5-7b-instruct": "needs 1 GPU of type L4 per replica; the cluster has 0"}


async def test_a_prompt_no_tier2_window_takes_goes_to_tier3_or_is_a_400(make):
    from serve.tiers.policy import TierChoice
    from serve.tiers.tier2_client import Tier2Failure

    too_long = Tier2Failure("too_long", "the conversation does not fit any tier-2 window: tiny (1024 tokens)")
    svc = make()
    svc.services.models.available = {1, 2, 3}
    turn = await svc.prepare(request("Summarise this: " + "word " * 500))
    up = svc.chat_service._after_tier2_failure(turn, TierChoice(2, "classifier: generation"), too_long)
    assert (up.tier, up.escalated_from, up.cause) == (3, 2, "tier2_too_long") and "1024 tokens" in up.reason
    alone = make(tier3=False)
    with pytest.raises(ApiError) as err:
        alone.chat_service._after_tier2_failure(turn, TierChoice(2, "classifier: generation"), too_long)
    assert err.value.status == 400 and err.value.code == "context_length_exceeded"
    assert "no tier above tier 2 can answer" in err.value.message


@pytest.mark.parametrize("cause,status", [("overload", 503), ("timeout", 504), ("failure", 502)])
async def test_tier2_failures_without_a_tier_above_are_errors_that_say_so(make, cause, status):
    from serve.tiers.policy import TierChoice
    from serve.tiers.tier2_client import Tier2Failure

    svc = make(tier3=False)
    svc.services.models.available = {1, 2, 3}
    turn = await svc.prepare(request("Write a poem"))
    with pytest.raises(ApiError) as err:
        svc.chat_service._after_tier2_failure(turn, TierChoice(2, "x"), Tier2Failure(cause, "replica gone"))
    assert err.value.status == status and "replica gone" in err.value.message


async def test_route_names_the_tier2_model_chat_would_try_first(make, settings):
    from deployments.config import Tier2ModelSettings
    from serve.tiers.tier2_client import Tier2Pool

    class Handle:
        def options(self, **_):
            return self

    base = {"model_loading_config": {"model_id": "tiny", "model_source": "/w"}, "accelerator_config": {"kind": "cpu"},
            "engine_kwargs": {"max_model_len": 1024, "enable_prefix_caching": True},
            "deployment_config": {"max_ongoing_requests": 4, "max_queued_requests": 8,
                                  "autoscaling_config": {"min_replicas": 1, "max_replicas": 1,
                                                         "target_ongoing_requests": 2}}}
    model = Tier2ModelSettings.model_validate({"llm_config": base, "tasks": ["generation"], "adapters_path": "/a",
                                               "adapters": [{"name": "extract", "tasks": ["sentiment"]}]})
    s = settings.model_copy(deep=True)
    s.tier2.models = [model]
    svc = make(route=decision("sentiment", tier=2), tier2=Tier2Pool(s.tier2, {"tiny": Handle()}, {}), settings_=s)
    s = svc.settings
    info = await svc.route(request("What is the sentiment, and why? I loved it."))
    assert (info.tier, info.model) == (2, "tiny:extract") and "lists task 'sentiment'" in info.reason
    svc.router.decision = decision("reasoning", tier=2)
    info = await svc.route(request("Prove it."))
    assert info.tier == 3 and info.escalation_cause == "tier2_no_fit"
    # The router's predicted quality for the benchmark model tier 2 stands in for decides whether it may.
    s.router.quality.threshold = 0.5
    svc.router.decision = decision("generation", tier=2)
    svc.router.decision.quality = {s.router.quality.tier2_as: 0.2}
    info = await svc.route(request("Write a sonnet about entropy."))
    assert info.tier == 3 and "no tier-2 model is predicted to answer well enough" in info.reason
    svc.router.decision.quality = {s.router.quality.tier2_as: 0.7}
    info = await svc.route(request("Write a sonnet about entropy."))
    assert (info.tier, info.model) == (2, "tiny") and "predicted quality 0.70" in info.reason


@pytest.mark.parametrize("status,expected", [(400, 400), (422, 422), (401, 502), (403, 502), (404, 502), (429, 502),
                                             (None, 502)])
def test_a_provider_refusing_tierwise_is_the_gateways_upstream_error_not_the_clients(status, expected):
    from serve.tiers.tier3_client import Tier3Unavailable

    info = TierwiseInfo(tier=3, model="m", task="reasoning", reason="r", confidence=0.9)
    err = Tier3Service.upstream_error(Tier3Unavailable("nope", status=status, provider="a"), info)
    assert err.status == expected and err.type == ("invalid_request_error" if expected < 500 else "upstream_error")


def test_streamed_tool_call_pieces_fold_into_whole_calls():
    calls: dict = {}
    merge_tool_call_deltas(calls, [{"index": 0, "id": "call_1", "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""}}])
    merge_tool_call_deltas(calls, [{"index": 0, "function": {"arguments": '{"city": '}},
                                   {"index": 1, "id": "call_2", "function": {"name": "get_time", "arguments": "{}"}}])
    merge_tool_call_deltas(calls, [{"index": 0, "function": {"arguments": '"Porto"}'}}])
    assert calls[0] == {"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Porto"}'}}
    assert calls[1]["id"] == "call_2" and calls[1]["function"] == {"name": "get_time", "arguments": "{}"}


async def test_a_stream_survives_line_separators_in_the_text(make):
    svc = make(answer=Answer("sentiment", {"label": "pos\u2028itive\x85"}, 0.9))
    response = await svc.chat(request(stream=True))
    body = "".join([e async for e in response.body_iterator])
    assert "\u2028" not in body and "\x85" not in body
    # A reader that splits lines the way str.splitlines does sees the same lines as one splitting at LF.
    assert body.endswith("\n") and body.splitlines() == body.split("\n")[:-1]
