"""The running gateway over HTTP, with the official openai client: tiers, streaming, conversations,
tier-3 provider failures, routing of the acceptance examples, the task endpoints, and what tier 1 may
answer (tools, image parts, response formats, languages)."""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest

ACCEPTANCE = [
    ("Product is great!", "sentiment", 1, None),
    ("Who are the people mentioned here: Barack Obama met Angela Merkel in Berlin on Tuesday.", "entities", 1, None),
    ("What is our return policy?", "faq", 1, None),
    # Tier 2 is not deployed here: tier 3 serves generative requests, and says so when the router proposed
    # tier 2 (its P(tier 2 suffices) reached router.quality.threshold).
    ("Write a professional follow-up.", "generation", 3, "by quality"),
    ("Prove that the square root of 2 is irrational.", "reasoning", 3, "by quality"),
]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def conversation_keys(redis_db, conversation_id: str) -> list[str]:
    r, prefix = redis_db
    return list(r.scan_iter(match=f"{prefix}:*:conv:{conversation_id}"))


@pytest.mark.parametrize("app", ["main", "isolated"])
@pytest.mark.parametrize("text,task,tier,escalated_from", ACCEPTANCE)
def test_route_endpoint_acceptance_examples(cluster, app, text, task, tier, escalated_from):
    info = httpx.post(f"{cluster[app]}/v1/route", json={"model": "auto", "messages": user(text)}, timeout=30).json()
    if escalated_from == "by quality":
        from serve.settings import load_settings

        proposed = max(info["scores"]["quality"].values()) >= load_settings().router.quality.threshold
        escalated_from = 2 if proposed else None
    assert (info["task"], info["tier"], info.get("escalated_from")) == (task, tier, escalated_from), info
    assert {"tasks", "faq", "pii", "latency_ms"} <= set(info["scores"])
    if escalated_from == 2:
        assert "tier 2 not deployed" in info["reason"]


def test_tier1_chat_non_streaming(client):
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=user("Product is great!"))
    assert raw.headers["x-tierwise-tier"] == "1"
    assert raw.headers["x-tierwise-model"] == "tierwise-tier1"
    completion = raw.parse()
    assert completion.choices[0].message.content == "positive"
    tw = completion.model_extra["tierwise"]
    assert (tw["tier"], tw["task"], tw["model"]) == (1, "sentiment", "tierwise-tier1")
    assert tw["result"]["label"] == "positive"
    assert 0 < tw["cost_usd"] < tw["baseline_cost_usd"]
    assert completion.usage.prompt_tokens > 0


def test_tier1_chat_streaming(client):
    # The tier-1 model, pinned: tier 1 answers even where it would pass an unsure answer up.
    chunks = list(client.chat.completions.create(model="tierwise-tier1", stream=True, messages=user(
        "Who are the people mentioned here: Barack Obama met Angela Merkel in Berlin on Tuesday.")))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Barack Obama, Angela Merkel"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    tw = last.model_extra["tierwise"]
    assert (tw["tier"], tw["task"]) == (1, "entities")
    assert "baseline_cost_usd" in tw
    assert all("tierwise" not in c.model_extra for c in chunks[:-1])


def test_faq_answer_over_chat(client):
    completion = client.chat.completions.create(model="auto", messages=user("What is our return policy?"))
    assert "30 days" in completion.choices[0].message.content
    assert completion.model_extra["tierwise"]["result"]["faq_id"] == "returns"


def test_tier3_non_streaming_and_tier2_fallback(client, provider):
    completion = client.chat.completions.create(model="auto", messages=user("Write a professional follow-up."))
    assert completion.choices[0].message.content.startswith("fake reply to: Write a professional follow-up.")
    tw = completion.model_extra["tierwise"]
    assert (tw["tier"], tw["escalated_from"], tw["model"]) == (3, 2, "fake-frontier")
    assert tw["cost_usd"] == pytest.approx(tw["baseline_cost_usd"])  # unpriced model: reference price
    assert provider.requests[-1]["messages"] == user("Write a professional follow-up.")


def test_tier3_streaming(client):
    chunks = list(client.chat.completions.create(
        model="auto", stream=True, stream_options={"include_usage": True},
        messages=user("Prove that the square root of 2 is irrational.")))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("fake reply to: Prove that the square root of 2 is irrational.")
    tw = chunks[-1].model_extra["tierwise"]
    assert tw["tier"] == 3 and tw["task"] == "reasoning"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert chunks[-2].choices[0].finish_reason == "stop"
    without = list(client.chat.completions.create(
        model="auto", stream=True, messages=user("Prove that the square root of 2 is irrational.")))
    assert all(c.usage is None for c in without) and without[-1].choices[0].finish_reason == "stop"


def test_two_turn_conversation_second_turn_sees_first(client, provider, redis_db):
    cid = f"conv-{uuid.uuid4().hex}"
    headers = {"X-Conversation-Id": cid}
    first = client.chat.completions.create(model="auto", extra_headers=headers,
                                           messages=user("Prove that the square root of 2 is irrational."))
    second = client.chat.completions.create(model="auto", extra_headers=headers,
                                            messages=user("Which one is cheaper to run?"))
    seen = provider.requests[-1]["messages"]
    assert [m["role"] for m in seen] == ["user", "assistant", "user"]
    assert seen[0]["content"] == "Prove that the square root of 2 is irrational."
    assert seen[1]["content"] == first.choices[0].message.content
    assert "[saw 3 messages]" in second.choices[0].message.content
    assert second.model_extra["tierwise"]["conversation_id"] == cid
    (key,) = conversation_keys(redis_db, cid)
    r, _ = redis_db
    stored = [json.loads(m) for m in r.lrange(key, 0, -1)]
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
    assert stored[1]["tierwise"]["tier"] == 3
    assert 0 < r.ttl(key) <= 86400


def test_resent_history_is_not_duplicated(client, redis_db):
    cid = f"conv-{uuid.uuid4().hex}"
    headers = {"X-Conversation-Id": cid}
    first = client.chat.completions.create(model="auto", extra_headers=headers, messages=user("Product is great!"))
    full = user("Product is great!") + [{"role": "assistant", "content": first.choices[0].message.content}] + \
        user("The battery died after a day, awful.")
    second = client.chat.completions.create(model="auto", extra_headers=headers, messages=full)
    assert second.model_extra["tierwise"]["task"] == "sentiment"
    r, _ = redis_db
    (key,) = conversation_keys(redis_db, cid)
    assert r.llen(key) == 4


def test_sticky_conversation_stays_at_tier3(client):
    cid = f"conv-{uuid.uuid4().hex}"
    headers = {"X-Conversation-Id": cid}
    client.chat.completions.create(model="auto", extra_headers=headers,
                                   messages=user("Prove that the square root of 2 is irrational."))
    follow = client.chat.completions.create(model="auto", extra_headers=headers, messages=user("And why?"))
    tw = follow.model_extra["tierwise"]
    assert tw["tier"] == 3


def test_429_then_success(client, provider):
    before = len(provider.requests)
    provider.fail_next(429, retry_after=0.1)
    completion = client.chat.completions.create(model="auto",
                                                messages=user("Prove that the square root of 2 is irrational."))
    assert completion.model_extra["tierwise"]["tier"] == 3
    assert len(provider.requests) - before == 2


def test_provider_timeout_gives_502_with_decision(client, provider):
    provider.delay_next(4, times=2)  # timeout_s 1.5 with one retry: both attempts time out
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="auto", messages=user("Prove that the square root of 2 is irrational."))
    assert err.value.status_code == 502
    body = err.value.response.json()["error"]
    assert body["type"] == "upstream_error" and body["tierwise"]["tier"] == 3


def test_provider_failing_before_the_stream_starts_is_an_http_error(client, provider):
    provider.fail_next(500, times=2)  # the first attempt and its one retry
    with pytest.raises(openai.APIStatusError) as err:
        list(client.chat.completions.create(model="auto", stream=True,
                                            messages=user("Prove that the square root of 2 is irrational.")))
    assert err.value.status_code == 502
    assert err.value.response.json()["error"]["tierwise"]["task"] == "reasoning"


def test_forced_model(client):
    completion = client.chat.completions.create(model="tierwise-tier1", messages=user("I loved every minute."))
    tw = completion.model_extra["tierwise"]
    assert tw["tier"] == 1 and "client" in tw["reason"]
    frontier = client.chat.completions.create(model="fake-frontier", messages=user("Product is great!"))
    tw = frontier.model_extra["tierwise"]
    assert (tw["tier"], tw["model"]) == (3, "fake-frontier") and "client" in tw["reason"]


def test_models_endpoint(client):
    ids = {m.id for m in client.models.list().data}
    assert {"auto", "tierwise-tier1", "fake-frontier"} <= ids


@pytest.mark.parametrize("task,text,check", [
    ("sentiment", "Product is great!", lambda r: r["result"]["label"] == "positive"),
    ("entities", "Angela Merkel met Barack Obama in Paris.", lambda r: any(e["text"] == "Paris" for e in r["result"]["entities"])),
    ("faq", "How long does shipping take?", lambda r: r["result"]["faq_id"] == "shipping-time"),
    ("intent", "set an alarm for 7 am", lambda r: r["result"]["intent"] == "alarm"),
])
def test_task_endpoints(http, task, text, check):
    response = http.post(f"/v1/tasks/{task}", json={"text": text})
    assert response.status_code == 200, response.text
    body = response.json()
    assert check(body), body
    assert body["model"] == "tierwise-tier1" and body["latency_ms"] > 0


def test_health_readiness_metrics(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz").json()
    assert ready["status"] == "ready" and ready["store_backend"] == "redis" and ready["tier3_configured"]
    http.post("/v1/chat/completions", json={"model": "auto", "messages": user("Product is great!")})
    text = http.get("/metrics").text
    assert 'tierwise_requests_total{endpoint="chat",model="tierwise-tier1",status="200",task="sentiment",tier="1"}' in text
    assert "tierwise_baseline_cost_usd_total" in text
    http.post("/v1/chat/completions", json={"model": "gpt-17", "messages": user("hi")})
    assert 'tierwise_errors_total{code="model_not_found",status="404"}' in http.get("/metrics").text


BAD_INPUTS = [
    ("malformed JSON", b'{"model": "auto", "messages": [', {}, 400, "invalid_json"),
    ("invalid UTF-8", b'{"model": "auto", "messages": [{"role": "user", "content": "\xff\xfe"}]}', {}, 400,
     "invalid_utf8"),
    ("lone surrogate escape", b'{"model": "auto", "messages": [{"role": "user", "content": "hi \\ud800"}]}', {},
     400, "invalid_unicode"),
    ("not an object", b'[1, 2]', {}, 400, "invalid_type"),
    ("missing messages", json.dumps({"model": "auto"}).encode(), {}, 400, "invalid_value"),
    ("empty messages", json.dumps({"model": "auto", "messages": []}).encode(), {}, 400, "invalid_value"),
    ("messages wrong type", json.dumps({"model": "auto", "messages": "hi"}).encode(), {}, 400, "invalid_value"),
    ("content wrong type", json.dumps({"model": "auto", "messages": [{"role": "user", "content": 5}]}).encode(),
     {}, 400, "invalid_value"),
    ("empty user content", json.dumps({"model": "auto", "messages": user("   ")}).encode(), {}, 400,
     "invalid_value"),
    ("unknown role", json.dumps({"model": "auto", "messages": [{"role": "wizard", "content": "hi"}]}).encode(),
     {}, 400, "invalid_value"),
    ("temperature out of range", json.dumps({"model": "auto", "messages": user("hi"), "temperature": 9}).encode(),
     {}, 400, "invalid_value"),
    ("n > 1", json.dumps({"model": "auto", "messages": user("hi"), "n": 3}).encode(), {}, 400, "invalid_value"),
    ("unknown model", json.dumps({"model": "gpt-17", "messages": user("hi")}).encode(), {}, 404,
     "model_not_found"),
    ("oversized body", json.dumps({"model": "auto", "messages": user("x" * 1_100_000)}).encode(), {}, 413,
     "body_too_large"),
    ("oversized message", json.dumps({"model": "auto", "messages": user("x" * 200_000)}).encode(), {}, 413,
     "message_too_large"),
    ("bad conversation id", json.dumps({"model": "auto", "messages": user("hi")}).encode(),
     {"X-Conversation-Id": "a b{c}"}, 400, None),
]


@pytest.mark.parametrize("name,body,headers,status,code", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_openai_error_and_stores_nothing(http, redis_db, name, body, headers, status, code):
    cid = headers.get("X-Conversation-Id") or f"conv-{uuid.uuid4().hex}"
    response = http.post("/v1/chat/completions", content=body,
                         headers={"Content-Type": "application/json", "X-Conversation-Id": cid})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    if code:
        assert error["code"] == code
    assert conversation_keys(redis_db, cid) == []


def test_unknown_route_and_task_are_openai_style_404(http):
    for path in ("/v1/nothing", "/v1/tasks/poetry"):
        response = http.post(path, json={"text": "x"})
        assert response.status_code == 404
        assert response.json()["error"]["message"]


def test_task_endpoint_bad_input(http):
    assert http.post("/v1/tasks/sentiment", json={"text": ""}).status_code == 400
    assert http.post("/v1/tasks/sentiment", json={"txt": "hi"}).status_code == 400
    assert http.post("/v1/tasks/sentiment", content=b"\xff", headers={"Content-Type": "application/json"}).status_code == 400


@pytest.mark.parametrize("text,task", [(t, k) for t, k, tier, _ in ACCEPTANCE if tier == 1])
def test_tier1_through_deployments(cluster, text, task):
    """The isolated app runs the router and tier 1 as their own deployments (one handle hop each)."""
    response = httpx.post(f"{cluster['isolated']}/v1/chat/completions", timeout=30,
                          json={"model": "auto", "messages": user(text)})
    assert response.status_code == 200, response.text
    tw = response.json()["tierwise"]
    assert (tw["tier"], tw["task"]) == (1, task)
    task_response = httpx.post(f"{cluster['isolated']}/v1/tasks/sentiment", json={"text": text}, timeout=30)
    assert task_response.status_code == 200


def test_tier3_not_configured_is_a_clear_503(cluster):
    response = httpx.post(f"{cluster['isolated']}/v1/chat/completions", timeout=30,
                          json={"model": "auto", "messages": user("Prove that the square root of 2 is irrational.")})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "tier3_not_configured"
    assert "tier3.providers" in error["message"]
    assert error["tierwise"]["tier"] == 3 and error["tierwise"]["task"] == "reasoning"


def test_redis_down_fails_conversations_not_stateless_requests(cluster, private_redis):
    base = cluster["isolated"]
    ok = httpx.post(f"{base}/v1/chat/completions", json={"model": "auto", "messages": user("Product is great!")},
                    headers={"X-Conversation-Id": "before-outage"}, timeout=30)
    assert ok.status_code == 200
    proc, _ = private_redis
    proc.kill()
    proc.wait()
    stateful = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                          json={"model": "auto", "messages": user("Product is great!")},
                          headers={"X-Conversation-Id": "during-outage"})
    assert stateful.status_code == 503
    assert stateful.headers["retry-after"]
    assert "conversation store is unavailable" in stateful.json()["error"]["message"]
    stateless = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                           json={"model": "auto", "messages": user("Product is great!")})
    assert stateless.status_code == 200
    assert httpx.get(f"{base}/readyz", timeout=30).status_code == 503


# -- what tier 1 may answer, and in which form ----------------------------------------------------------

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
IMAGE_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
SENTIMENT_SCHEMA = {"type": "json_schema", "json_schema": {"name": "sentiment", "strict": True, "schema": {
    "type": "object", "additionalProperties": False, "required": ["sentiment"],
    "properties": {"sentiment": {"type": "string", "enum": ["POSITIVE", "NEGATIVE", "NEUTRAL"]}}}}}


def test_tools_go_to_tier3_intact(client, provider):
    completion = client.chat.completions.create(model="auto", messages=user("Product is great!"),
                                                tools=[WEATHER_TOOL], tool_choice="auto")
    tw = completion.model_extra["tierwise"]
    assert tw["tier"] == 3 and "tools" in tw["reason"]
    sent = provider.requests[-1]
    assert sent["tools"] == [WEATHER_TOOL] and sent["tool_choice"] == "auto"


def test_a_tool_call_round_trip_through_tier3(client, provider):
    """An agent's loop: the model calls a tool, the client runs it and sends the result back."""
    question = user("What is the weather in Lisbon?")
    first = client.chat.completions.create(model="auto", messages=question, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["query"]
    result = {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}
    second = client.chat.completions.create(model="auto", tools=[WEATHER_TOOL], messages=[
        *question, choice.message.model_dump(exclude_none=True), result])
    assert second.choices[0].message.content == f'fake reply to tool result {call.id}: {{"temp_c": 21}}'
    sent = provider.requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id and sent[2] == result


def test_a_streamed_tool_call_arrives_in_pieces_that_join(client, base_url, redis_db):
    cid = f"tools-{uuid.uuid4().hex[:8]}"
    chunks = list(client.chat.completions.create(model="auto", stream=True, tools=[WEATHER_TOOL],
                                                 messages=user("What is the weather in Porto?"),
                                                 extra_headers={"X-Conversation-Id": cid}))
    pieces = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert pieces[0][0].id and pieces[0][0].function.name == "get_weather"
    arguments = "".join(p[0].function.arguments or "" for p in pieces)
    assert json.loads(arguments) == {"query": "What is the weather in Porto?"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    r, prefix = redis_db
    (key,) = r.scan_iter(match=f"{prefix}:*:conv:{cid}")
    stored = json.loads(r.lrange(key, -1, -1)[0])
    assert stored["tool_calls"][0]["id"] == pieces[0][0].id and stored["tool_calls"][0]["function"]["arguments"] == arguments


def test_image_parts_go_to_tier3_intact(client, provider):
    content = [{"type": "text", "text": "Product is great!"}, IMAGE_PART]
    completion = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": content}])
    tw = completion.model_extra["tierwise"]
    assert tw["tier"] == 3 and "image_url" in tw["reason"]
    assert provider.requests[-1]["messages"] == [{"role": "user", "content": content}]


def test_pinned_tier1_with_an_image_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tierwise-tier1", messages=[
            {"role": "user", "content": [{"type": "text", "text": "Product is great!"}, IMAGE_PART]}])
    error = err.value.response.json()["error"]
    assert error["param"] == "model" and error["code"] == "unsupported_by_tier1" and "image_url" in error["message"]


def test_json_object_answered_by_tier1(client):
    completion = client.chat.completions.create(model="auto", messages=user("Product is great!"),
                                                response_format={"type": "json_object"})
    assert completion.model_extra["tierwise"]["tier"] == 1
    assert json.loads(completion.choices[0].message.content) == {"sentiment": "positive"}


def test_json_schema_filled_by_tier1(client):
    completion = client.chat.completions.create(model="auto", messages=user("Product is great!"),
                                                response_format=SENTIMENT_SCHEMA)
    assert completion.model_extra["tierwise"]["tier"] == 1
    assert json.loads(completion.choices[0].message.content) == {"sentiment": "POSITIVE"}


def test_json_schema_tier1_cannot_fill_goes_to_tier3(client, provider):
    fmt = {"type": "json_schema", "json_schema": {"name": "review", "schema": {
        "type": "object", "required": ["sentiment", "rationale"],
        "properties": {"sentiment": {"type": "string"}, "rationale": {"type": "string"}}}}}
    completion = client.chat.completions.create(model="auto", messages=user("Product is great!"), response_format=fmt)
    tw = completion.model_extra["tierwise"]
    assert (tw["tier"], tw["escalated_from"]) == (3, 1) and "rationale" in tw["reason"]
    assert provider.requests[-1]["response_format"] == fmt


def test_invalid_json_schema_is_a_400(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="auto", messages=user("Product is great!"), response_format=fmt)
    error = err.value.response.json()["error"]
    assert error["param"] == "response_format" and "not a valid JSON Schema" in error["message"]


def test_non_english_goes_to_tier3(client, provider):
    completion = client.chat.completions.create(model="auto", messages=user("Das Produkt ist großartig!"))
    tw = completion.model_extra["tierwise"]
    assert tw["tier"] == 3 and "looks de" in tw["reason"]
    assert provider.requests[-1]["messages"] == user("Das Produkt ist großartig!")


def test_two_tenants_sending_one_conversation_id_over_http_stay_apart(cluster, base_url, provider, redis_db):
    from serve.tenancy.auth import KeyAdmin
    from tests.integration.conftest import REDIS_DB_URL

    admin = KeyAdmin(REDIS_DB_URL, cluster["prefix"])
    (_, acme), (_, globex) = admin.create("acme"), admin.create("globex")
    cid = f"shared-{uuid.uuid4().hex[:8]}"

    def ask(key: str, text: str) -> None:
        c = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=30)
        c.chat.completions.create(model="fake-frontier", messages=user(text), extra_headers={"X-Conversation-Id": cid})

    ask(acme, "Write a professional follow-up about the Henderson contract.")
    ask(globex, "Write a professional follow-up.")
    # Globex's request reached the provider with its own turn only, not acme's history.
    assert provider.requests[-1]["messages"] == user("Write a professional follow-up.")
    r, prefix = redis_db
    keys = sorted(r.scan_iter(match=f"{prefix}:*:conv:{cid}"))
    assert len(keys) == 2 and any("t:acme" in k for k in keys) and any("t:globex" in k for k in keys)
    with pytest.raises(openai.AuthenticationError) as err:
        ask("tw-00000000-forged", "Hello?")
    assert err.value.status_code == 401
