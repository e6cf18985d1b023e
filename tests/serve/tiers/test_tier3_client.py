"""Tier3Client against real local OpenAI-compatible servers: retries, failover, timeouts, breaker, streaming."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio

from serve.tiers.tier3_client import Tier3Client, Tier3NotConfigured, Tier3Unavailable
from serve.settings import ProviderSettings
from tests.support.fake_openai import FakeOpenAIServer

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "what is two plus two"},
    {"role": "assistant", "content": "four"},
    {"role": "user", "content": "and three plus three"},
]
REPLY = "fake reply to: and three plus three [saw 4 messages]"


@pytest.fixture(scope="module")
def servers():
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        yield a, b


@pytest.fixture(autouse=True)
def fresh(servers):
    for srv in servers:
        srv.reset()


def spec(srv: FakeOpenAIServer, name: str, **overrides) -> ProviderSettings:
    fields = {"timeout_s": 5.0, "max_retries": 0, "allow_no_key": True, **overrides}
    return ProviderSettings(name=name, base_url=srv.base_url, model=f"model-{name}", api_key_env="TIERWISE_TEST_NO_KEY", **fields)


@pytest_asyncio.fixture
async def make_client():
    clients: list[Tier3Client] = []

    def make(*specs: ProviderSettings, **kwargs) -> Tier3Client:
        clients.append(Tier3Client(list(specs), **kwargs))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


@pytest.mark.asyncio
async def test_complete_returns_reply_usage_and_passes_params(servers, make_client):
    a, _ = servers
    client = make_client(spec(a, "a"))

    result = await client.complete(MESSAGES, {"temperature": 0.2, "max_tokens": None, "top_k": 5})

    assert result.content == REPLY
    assert (result.provider, result.model, result.finish_reason) == ("a", "model-a", "stop")
    assert result.prompt_tokens == 2 + 5 + 1 + 4
    assert result.completion_tokens == len(REPLY.split())
    [body] = a.requests
    assert body["messages"] == MESSAGES
    assert body["temperature"] == 0.2 and body["top_k"] == 5
    assert "max_tokens" not in body


@pytest.mark.asyncio
async def test_stream_deltas_join_to_reply_then_done_with_usage(servers, make_client):
    a, _ = servers
    client = make_client(spec(a, "a"))

    items = [item async for item in client.stream(MESSAGES, {})]

    deltas = [item["delta"] for item in items[:-1]]
    assert len(deltas) > 3 and "".join(deltas) == REPLY
    assert items[-1] == {
        "done": True,
        "model": "model-a",
        "provider": "a",
        "finish_reason": "stop",
        "prompt_tokens": 12,
        "completion_tokens": len(REPLY.split()),
    }
    assert a.requests[0]["stream_options"] == {"include_usage": True}


@pytest.mark.asyncio
async def test_rate_limit_is_retried_by_the_sdk(servers, make_client):
    a, _ = servers
    client = make_client(spec(a, "a", max_retries=1))
    a.fail_next(429, retry_after=0.05)

    result = await client.complete(MESSAGES, {})

    assert result.content == REPLY
    assert len(a.requests) == 2


@pytest.mark.asyncio
async def test_server_error_fails_over_to_next_provider_with_full_history(servers, make_client):
    a, b = servers
    client = make_client(spec(a, "a", max_retries=1), spec(b, "b"))
    a.fail_next(503, times=2, retry_after=0.05)

    result = await client.complete(MESSAGES, {})

    assert result.provider == "b" and result.model == "model-b"
    assert len(a.requests) == 2
    assert [r["messages"] for r in b.requests] == [MESSAGES]


@pytest.mark.asyncio
async def test_stream_fails_over_before_first_delta(servers, make_client):
    a, b = servers
    client = make_client(spec(a, "a"), spec(b, "b"))
    a.fail_next(502)

    items = [item async for item in client.stream(MESSAGES, {})]

    assert "".join(i.get("delta", "") for i in items) == REPLY
    assert items[-1]["provider"] == "b"
    # The first delta names the model that answers, the failover's, so the gateway can say so from the start.
    assert items[0]["model"] == items[-1]["model"] == "model-b" and "model" not in items[1]


@pytest.mark.asyncio
async def test_timeout_without_fallback_raises_unavailable_quickly(servers, make_client):
    a, _ = servers
    client = make_client(spec(a, "a", timeout_s=0.5))
    a.delay_next(1.0)

    started = time.monotonic()
    with pytest.raises(Tier3Unavailable) as info:
        await client.complete(MESSAGES, {})

    assert time.monotonic() - started < 0.9
    assert info.value.status is None and info.value.provider == "a"
    assert "timed out" in str(info.value).lower()


@pytest.mark.asyncio
async def test_timeout_fails_over_to_healthy_provider(servers, make_client):
    a, b = servers
    client = make_client(spec(a, "a", timeout_s=0.5), spec(b, "b"))
    a.delay_next(1.0)

    result = await client.complete(MESSAGES, {})

    assert result.provider == "b"


@pytest.mark.asyncio
async def test_client_error_is_not_failed_over(servers, make_client):
    a, b = servers
    client = make_client(spec(a, "a", max_retries=2), spec(b, "b"))
    a.fail_next(400)

    with pytest.raises(Tier3Unavailable) as info:
        await client.complete(MESSAGES, {})

    assert (info.value.status, info.value.provider) == (400, "a")
    assert len(a.requests) == 1 and b.requests == []


@pytest.mark.asyncio
async def test_not_configured_explains_how_to_configure(servers, make_client, monkeypatch):
    monkeypatch.delenv("TIERWISE_TEST_MISSING_KEY", raising=False)
    empty = make_client()
    keyless = make_client(
        ProviderSettings(name="openai", base_url=servers[0].base_url, model="gpt-x", api_key_env="TIERWISE_TEST_MISSING_KEY")
    )

    for client in (empty, keyless):
        assert not client.configured
        with pytest.raises(Tier3NotConfigured) as info:
            await client.complete(MESSAGES, {})
        message = str(info.value)
        assert "TIERWISE_TIER3__PROVIDERS" in message and "tier3.providers" in message and "api_key_env" in message
    assert "TIERWISE_TEST_MISSING_KEY" in message
    with pytest.raises(Tier3NotConfigured):
        [item async for item in keyless.stream(MESSAGES, {})]

    monkeypatch.setenv("TIERWISE_TEST_MISSING_KEY", "sk-test")
    assert make_client(
        ProviderSettings(name="openai", base_url=servers[0].base_url, model="gpt-x", api_key_env="TIERWISE_TEST_MISSING_KEY")
    ).configured


@pytest.mark.asyncio
async def test_breaker_skips_dead_provider_then_allows_one_trial(servers, make_client):
    a, b = servers
    client = make_client(spec(a, "a"), spec(b, "b"), breaker_threshold=2, breaker_cooldown_s=0.3)
    a.fail_next(503, times=100)

    for _ in range(5):
        assert (await client.complete(MESSAGES, {})).provider == "b"
    assert len(a.requests) == 2  # open after two failures: the dead provider saw nothing more

    await asyncio.sleep(0.35)
    a.reset()
    assert (await client.complete(MESSAGES, {})).provider == "a"  # the trial succeeds and closes it
    assert len(a.requests) == 1


@pytest.mark.asyncio
async def test_all_breakers_open_raises_unavailable_without_calling_anyone(servers, make_client):
    a, _ = servers
    client = make_client(spec(a, "a"), breaker_threshold=1, breaker_cooldown_s=30)
    a.fail_next(500)
    with pytest.raises(Tier3Unavailable) as info:
        await client.complete(MESSAGES, {})
    assert info.value.status == 500

    with pytest.raises(Tier3Unavailable, match="circuit-open"):
        await client.complete(MESSAGES, {})
    assert len(a.requests) == 1



@pytest.mark.asyncio
async def test_named_model_goes_to_its_provider_first(servers, make_client):
    a, b = servers
    client = make_client(spec(a, "a"), spec(b, "b"))

    pinned = await client.complete(MESSAGES, {}, prefer="model-b")
    default = await client.complete(MESSAGES, {})

    assert (pinned.provider, default.provider) == ("b", "a")
    assert len(a.requests) == 1 and len(b.requests) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_provider_refusing_tierwise_fails_over(servers, make_client, status):
    a, b = servers
    client = make_client(spec(a, "a"), spec(b, "b"))
    a.fail_next(status)
    completion = await client.complete(MESSAGES, {})
    assert completion.provider == "b" and len(a.requests) == 1


@pytest.mark.asyncio
async def test_the_last_provider_refusing_tierwise_says_so(servers, make_client):
    a, _ = servers
    client = make_client(spec(a, "a", max_retries=0))
    a.fail_next(401)
    with pytest.raises(Tier3Unavailable) as info:
        await client.complete(MESSAGES, {})
    assert info.value.status == 401 and "refused Tierwise's own key or model" in str(info.value)
