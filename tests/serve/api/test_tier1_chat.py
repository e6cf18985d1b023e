"""Chat requests answered by the real router and tier-1 models in-process (no Ray, no tier 3 configured):
what tier 1 keeps, the form of its answers, and ``tier1.when_unsure`` both ways."""

from __future__ import annotations

import json

import pytest

from models.tier1 import Tier1Models
from serve.api.errors import ApiError, parse_body
from serve.api.protocol import ChatCompletionRequest
from serve.api.serving_chat import ServingChat
from serve.services import build_local_services
from serve.settings import TenantPolicy
from serve.api.turns import Caller

UNCONFIGURED = "No tier-3 provider is configured."
SENTIMENT = "Classify the sentiment as positive, negative or neutral: 'I love this phone.'"


@pytest.fixture()
def service(settings, router):
    """``service(when_unsure=..., min_confidence=...)``: the chat service on the real models, nothing above
    tier 1."""

    def build(when_unsure: str = "answer", min_confidence: dict | None = None) -> ServingChat:
        s = settings.model_copy(deep=True)
        s.tier1.when_unsure = when_unsure
        s.tier1.min_confidence = min_confidence or {}
        tier1 = Tier1Models.from_settings(s, router.encoder, router.faq)
        return build_local_services(s, router, tier1, UNCONFIGURED).chat

    return build


async def ask(svc: ServingChat, content: str, **body) -> tuple[dict, dict]:
    request = parse_body(ChatCompletionRequest,
                         {"model": "auto", "messages": [{"role": "user", "content": content}]} | body)
    response = await svc.chat(request, None, Caller("default", TenantPolicy()), "req_test")
    return json.loads(response.body), dict(response.headers)


async def test_a_sure_answer_is_the_bare_label(service):
    body, headers = await ask(service(min_confidence={"sentiment3": 0.0}), SENTIMENT)
    assert body["choices"][0]["message"]["content"] == "positive"
    assert body["tierwise"]["tier"] == 1 and "low_confidence" not in body["tierwise"]
    assert "x-tierwise-low-confidence" not in headers


async def test_unsure_without_a_higher_tier_answers_marked(service):
    body, headers = await ask(service("answer", {"sentiment3": 1.01}), SENTIMENT)
    assert body["choices"][0]["message"]["content"] == "positive"
    assert body["tierwise"]["low_confidence"] is True and headers["x-tierwise-low-confidence"] == "true"
    assert "no higher tier can answer" in body["tierwise"]["reason"]


async def test_unsure_without_a_higher_tier_refuses_when_configured(service):
    with pytest.raises(ApiError) as err:
        await ask(service("refuse", {"sentiment3": 1.01}), SENTIMENT)
    assert err.value.status == 503 and err.value.tierwise.tier == 3


async def test_json_schema_is_filled_with_the_enum_spelling(service):
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {
        "type": "object", "required": ["sentiment"], "additionalProperties": False,
        "properties": {"sentiment": {"type": "string", "enum": ["POSITIVE", "NEGATIVE", "NEUTRAL"]}}}}}
    body, _ = await ask(service(min_confidence={"sentiment3": 0.0}), SENTIMENT, response_format=schema)
    assert json.loads(body["choices"][0]["message"]["content"]) == {"sentiment": "POSITIVE"}


@pytest.mark.parametrize("content", [
    "What is the weather usually like in Lisbon in October?",
    "Translate 'where is the train station' into German.",
])
async def test_questions_for_a_generative_tier_are_not_answered_on_tier1(service, content):
    with pytest.raises(ApiError) as err:
        await ask(service(), content)
    assert err.value.status == 503 and err.value.tierwise.tier > 1


async def test_tools_are_never_answered_on_tier1(service):
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    with pytest.raises(ApiError) as err:
        await ask(service(), SENTIMENT, tools=[tool])
    assert err.value.status == 503 and "tools" in err.value.tierwise.reason
