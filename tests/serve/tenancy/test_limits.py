"""Per-tenant limits: both backends on a fake clock; Redis-backed ones against the real Redis at REDIS_URL."""

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
import pytest_asyncio
from pydantic import ValidationError

from serve.tenancy.limits import LimitExceeded, MemoryLimiter, RedisLimiter, TenantLimits
from serve.store import StoreUnavailable
from tests.support.redis_scratch import DEAD_URL, REDIS_URL, redis_scratch

# 2025-03-10 12:00:00 UTC: twelve hours before midnight.
NOON = datetime(2025, 3, 10, 12, tzinfo=timezone.utc).timestamp()


class FakeClock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest_asyncio.fixture(params=["redis", "memory"])
async def make_limiter(request):
    """Factory for a limiter of each backend in turn, all sharing one fake clock (``factory.clock``); limiters
    made by one factory share their state, as replicas do through Redis."""
    made = []
    clock = FakeClock()
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "redis":
            _, prefix = await stack.enter_async_context(redis_scratch())

        def factory():
            if request.param == "redis":
                made.append(RedisLimiter(REDIS_URL, prefix, clock=clock))
            elif not made:
                made.append(MemoryLimiter(clock=clock))
            return made[-1]

        factory.clock = clock
        yield factory
        for limiter in made:
            await limiter.close()


async def _admitted(limiter, limits: TenantLimits, count: int, prompt_tokens: int = 0, tenant: str = "acme") -> int:
    """How many of ``count`` requests in a row are admitted."""
    admitted = 0
    for _ in range(count):
        with contextlib.suppress(LimitExceeded):
            await limiter.admit(tenant, limits, prompt_tokens)
            admitted += 1
    return admitted


async def _refusal(limiter, limits: TenantLimits, prompt_tokens: int = 0, tenant: str = "acme") -> LimitExceeded:
    with pytest.raises(LimitExceeded) as caught:
        await limiter.admit(tenant, limits, prompt_tokens)
    return caught.value


async def test_requests_per_minute_refuse_at_the_limit_and_recover(make_limiter):
    limiter, limits = make_limiter(), TenantLimits(requests_per_minute=20)
    assert await _admitted(limiter, limits, 25) == 20
    refused = await _refusal(limiter, limits)
    assert (refused.limit, refused.retry_after_s) == ("requests_per_minute", 3.0)
    make_limiter.clock.advance(2.999)
    assert (await _refusal(limiter, limits)).retry_after_s == pytest.approx(0.001)
    make_limiter.clock.advance(0.001)
    assert await _admitted(limiter, limits, 2) == 1
    make_limiter.clock.advance(60)
    assert await _admitted(limiter, limits, 25) == 20


async def test_an_interval_that_is_not_whole_milliseconds_still_gives_the_exact_burst(make_limiter):
    limiter, limits = make_limiter(), TenantLimits(requests_per_minute=7)
    assert await _admitted(limiter, limits, 10) == 7
    retry = (await _refusal(limiter, limits)).retry_after_s
    assert retry == 8.572  # 60/7 s, rounded up to the millisecond
    make_limiter.clock.advance(retry)
    assert await _admitted(limiter, limits, 3) == 1


async def test_a_tenant_without_limits_is_never_refused(make_limiter):
    assert await _admitted(make_limiter(), TenantLimits(), 500, prompt_tokens=10**6) == 500


async def test_tenants_have_separate_limits(make_limiter):
    limiter, limits = make_limiter(), TenantLimits(requests_per_minute=3)
    assert await _admitted(limiter, limits, 5, tenant="acme") == 3
    assert await _admitted(limiter, limits, 5, tenant="globex") == 3


async def test_tokens_per_minute_admit_prompts_that_fit(make_limiter):
    limiter, limits = make_limiter(), TenantLimits(tokens_per_minute=1000)
    assert await _admitted(limiter, limits, 5, prompt_tokens=300) == 3
    refused = await _refusal(limiter, limits, prompt_tokens=300)
    # 900 used, 1200 wanted: 200 tokens must drain, at 1000 a minute.
    assert (refused.limit, refused.retry_after_s) == ("tokens_per_minute", 12.0)
    assert await _admitted(limiter, limits, 1, prompt_tokens=100) == 1
    make_limiter.clock.advance(18)
    assert await _admitted(limiter, limits, 2, prompt_tokens=300) == 1


async def test_a_prompt_larger_than_the_limit_passes_when_the_bucket_is_clear(make_limiter):
    limiter, limits = make_limiter(), TenantLimits(tokens_per_minute=100)
    await limiter.admit("acme", limits, 500)
    # 500 tokens against a limit of 100: in debt until 400 have drained (4 minutes).
    assert (await _refusal(limiter, limits, prompt_tokens=0)).retry_after_s == 240.0
    assert (await _refusal(limiter, limits, prompt_tokens=500)).retry_after_s == 300.0
    make_limiter.clock.advance(300)
    await limiter.admit("acme", limits, 500)


async def test_charged_completion_tokens_put_the_tenant_in_debt(make_limiter):
    limiter, limits = make_limiter(), TenantLimits(tokens_per_minute=1000)
    await limiter.admit("acme", limits, 100)
    await limiter.charge("acme", limits, completion_tokens=1900, cost_usd=0.0)
    refused = await _refusal(limiter, limits, prompt_tokens=1)
    assert (refused.limit, refused.retry_after_s) == ("tokens_per_minute", 60.06)
    make_limiter.clock.advance(60.06)
    await limiter.admit("acme", limits, 1)


async def test_spend_per_day_refuses_until_midnight_utc(make_limiter):
    limiter, limits = make_limiter(), TenantLimits(spend_per_day_usd=0.3)
    await limiter.admit("acme", limits, 10)
    await limiter.charge("acme", limits, 5, cost_usd=0.1)
    await limiter.admit("acme", limits, 10)
    # 0.1 + 0.2 is 0.30000000000000004 in floats; the counter's integers make it exactly the budget.
    await limiter.charge("acme", limits, 5, cost_usd=0.2)
    refused = await _refusal(limiter, limits)
    assert (refused.limit, refused.retry_after_s) == ("spend_per_day_usd", 12 * 3600.0)
    make_limiter.clock.advance(12 * 3600 - 1)
    await _refusal(limiter, limits)
    make_limiter.clock.advance(1)
    await limiter.admit("acme", limits, 10)


async def test_a_budget_of_zero_refuses_everything(make_limiter):
    assert await _admitted(make_limiter(), TenantLimits(spend_per_day_usd=0), 3) == 0


async def test_a_refused_request_consumes_nothing(make_limiter):
    limiter = make_limiter()
    # Refused by tokens or spend: no request is taken from the request rate.
    await limiter.admit("acme", TenantLimits(requests_per_minute=3, tokens_per_minute=10), 10)
    assert await _admitted(limiter, TenantLimits(requests_per_minute=3, tokens_per_minute=10), 5, 5) == 0
    assert await _admitted(limiter, TenantLimits(requests_per_minute=3, spend_per_day_usd=0), 5) == 0
    assert await _admitted(limiter, TenantLimits(requests_per_minute=3), 5) == 2
    # Refused by the request rate: no token is taken.
    await limiter.admit("globex", TenantLimits(requests_per_minute=1, tokens_per_minute=100), 50)
    assert await _admitted(limiter, TenantLimits(requests_per_minute=1, tokens_per_minute=100), 3, 50) == 0
    assert await _admitted(limiter, TenantLimits(tokens_per_minute=100), 3, 50) == 1


async def test_limits_are_checked_in_order_requests_tokens_spend(make_limiter):
    limiter = make_limiter()
    everything = TenantLimits(requests_per_minute=1, tokens_per_minute=10, spend_per_day_usd=0.5)
    await limiter.admit("acme", everything, 10)
    await limiter.charge("acme", everything, 10, cost_usd=1.0)
    assert (await _refusal(limiter, everything)).limit == "requests_per_minute"
    assert (await _refusal(limiter, everything.model_copy(update={"requests_per_minute": None}))).limit == \
        "tokens_per_minute"
    assert (await _refusal(limiter, TenantLimits(spend_per_day_usd=0.5))).limit == "spend_per_day_usd"


async def test_limits_are_read_from_each_call(make_limiter):
    limiter = make_limiter()
    assert await _admitted(limiter, TenantLimits(requests_per_minute=2), 3) == 2
    assert await _admitted(limiter, TenantLimits(requests_per_minute=4), 3) == 2
    assert await _admitted(limiter, TenantLimits(requests_per_minute=1), 3) == 0


async def test_any_model_with_the_limit_fields_will_do(make_limiter):
    @dataclass
    class Policy:
        requests_per_minute: int | None = 1
        tokens_per_minute: int | None = None
        spend_per_day_usd: float | None = None
        pii: str = "allow"

    assert await _admitted(make_limiter(), Policy(), 3) == 1


async def test_two_replicas_share_the_limits(make_limiter):
    first, second, limits = make_limiter(), make_limiter(), TenantLimits(requests_per_minute=4)
    assert await _admitted(first, limits, 2) == 2
    assert await _admitted(second, limits, 3) == 2
    assert await _admitted(first, limits, 1) == 0


async def test_the_refusal_names_the_limit_its_value_and_the_retry(make_limiter):
    limiter = make_limiter()
    await limiter.admit("acme", TenantLimits(requests_per_minute=20), 0)
    await limiter.charge("acme", TenantLimits(spend_per_day_usd=2.5), 0, cost_usd=3.0)
    assert str(await _refusal(limiter, TenantLimits(requests_per_minute=1))) == \
        "rate limit reached (requests_per_minute: 1); retry in 60.000 s"
    assert str(await _refusal(limiter, TenantLimits(spend_per_day_usd=2.5))) == \
        "daily spend limit reached (spend_per_day_usd: $2.5); retry after midnight UTC, in 43200.000 s"


async def test_bad_arguments_are_refused_with_a_clear_error(make_limiter):
    limiter = make_limiter()
    with pytest.raises(ValueError, match="tenant must be"):
        await limiter.admit("a{b}", TenantLimits(requests_per_minute=1), 0)
    with pytest.raises(ValueError, match="prompt_tokens must be a non-negative integer"):
        await limiter.admit("acme", TenantLimits(requests_per_minute=1), -1)
    with pytest.raises(ValueError, match="cost_usd must be a non-negative"):
        await limiter.charge("acme", TenantLimits(spend_per_day_usd=1), 0, float("nan"))


def test_limits_validate_their_values():
    with pytest.raises(ValidationError):
        TenantLimits(requests_per_minute=0)
    with pytest.raises(ValidationError):
        TenantLimits(spend_per_day_usd=-1)
    with pytest.raises(ValidationError):
        TenantLimits(request_per_minute=5)


async def test_concurrent_admissions_across_the_pool_take_exactly_the_limit(redis_raw):
    _, prefix = redis_raw
    limiter, limits = RedisLimiter(REDIS_URL, prefix, clock=FakeClock()), TenantLimits(requests_per_minute=20)
    try:
        results = await asyncio.gather(*(limiter.admit("acme", limits, 0) for _ in range(50)),
                                       return_exceptions=True)
    finally:
        await limiter.close()
    assert sum(r is None for r in results) == 20
    assert all(isinstance(r, LimitExceeded) for r in results if r is not None)


async def test_redis_keys_share_the_tenant_slot_and_expire(redis_raw):
    client, prefix = redis_raw
    limiter = RedisLimiter(REDIS_URL, prefix, clock=FakeClock())
    limits = TenantLimits(requests_per_minute=60, tokens_per_minute=600, spend_per_day_usd=1)
    try:
        await limiter.admit("acme", limits, 300)
        await limiter.charge("acme", limits, 300, 0.5)
    finally:
        await limiter.close()
    base = f"{prefix}:{{t:acme}}:limit"
    assert sorted([k.decode() async for k in client.scan_iter(match=f"{prefix}:*")]) == \
        sorted([f"{base}:rpm", f"{base}:tpm", f"{base}:spend:2025-03-10"])
    # One request drains in 1 s, 600 tokens in 60 s; each bucket then lives one more minute.
    assert 60_000 - 1000 < await client.pttl(f"{base}:rpm") <= 61_000
    assert 120_000 - 1000 < await client.pttl(f"{base}:tpm") <= 120_000
    assert 2 * 86400 - 10 < await client.ttl(f"{base}:spend:2025-03-10") <= 2 * 86400


async def test_an_unreachable_redis_raises_store_unavailable():
    limiter = RedisLimiter(DEAD_URL, "tw", clock=FakeClock(), socket_timeout_s=0.2)
    try:
        with pytest.raises(StoreUnavailable, match="limits store"):
            await limiter.admit("acme", TenantLimits(requests_per_minute=1), 0)
        with pytest.raises(StoreUnavailable):
            await limiter.charge("acme", TenantLimits(spend_per_day_usd=1), 0, 0.1)
        # Without limits there is nothing to ask Redis.
        await limiter.admit("acme", TenantLimits(), 0)
        await limiter.charge("acme", TenantLimits(requests_per_minute=5), 10, 0.1)
    finally:
        await limiter.close()
