"""The usage ledger: both backends on a fake clock; Redis-backed ones against the real Redis at REDIS_URL."""

import asyncio
import contextlib
import uuid
from datetime import date, datetime, timezone

import pytest
import pytest_asyncio

from serve.tenancy.ledger import MemoryLedger, RedisLedger, UsageEntry
from serve.store import StoreUnavailable
from tests.support.redis_scratch import DEAD_URL, REDIS_URL, redis_scratch

DAY1, DAY2 = date(2025, 3, 10), date(2025, 3, 11)


def _at(day: date, hour: int = 12, second: int = 0) -> float:
    return datetime(day.year, day.month, day.day, hour, 0, second, tzinfo=timezone.utc).timestamp()


class FakeClock:
    def __init__(self) -> None:
        self.now = _at(DAY1)

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture(params=["redis", "memory"])
async def ledger(request):
    """A ledger of each backend in turn, on a fake clock (set ``ledger.clock.now`` to move it)."""
    clock = FakeClock()
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "redis":
            _, prefix = await stack.enter_async_context(redis_scratch())
            made = RedisLedger(REDIS_URL, prefix, clock=clock)
        else:
            made = MemoryLedger(clock=clock)
        made.clock = clock
        yield made
        await made.close()


def _entry(tenant="acme", tier=1, model="tier1-minilm", prompt=10, completion=5, cost=0.0, baseline=0.001,
           request_id=None) -> UsageEntry:
    return UsageEntry(tenant, tier, model, prompt, completion, cost, baseline, request_id or uuid.uuid4().hex)


async def _record_sample(ledger) -> None:
    """acme: two tier-1 answers and one tier-3 on DAY1, one tier-2 on DAY2; globex: one tier-3 on DAY2."""
    await ledger.record(_entry(prompt=10, completion=5, cost=0.0, baseline=0.001))
    await ledger.record(_entry(prompt=20, completion=6, cost=0.0, baseline=0.002))
    await ledger.record(_entry(tier=3, model="gpt-x", prompt=100, completion=50, cost=0.1, baseline=0.1))
    ledger.clock.now = _at(DAY2)
    await ledger.record(_entry(tier=2, model="llama/3.1:8b", prompt=30, completion=10, cost=0.0002, baseline=0.003))
    await ledger.record(_entry(tenant="globex", tier=3, model="gpt-x", prompt=7, completion=3, cost=0.2,
                               baseline=0.2))


async def test_one_tenants_usage_is_summed_by_tier_model_and_day(ledger):
    await _record_sample(ledger)
    report = await ledger.report("acme", DAY1, DAY2)
    assert (report.tenant, report.start, report.end, report.by_tenant) == ("acme", DAY1, DAY2, None)
    total = report.total
    assert (total.requests, total.prompt_tokens, total.completion_tokens) == (4, 160, 71)
    assert (total.cost_usd, total.baseline_cost_usd, total.savings_usd) == (0.1002, 0.106, 0.0058)
    assert total.savings_pct == 5.47
    assert [(r.tier, r.requests, r.cost_usd) for r in report.by_tier] == [(1, 2, 0.0), (2, 1, 0.0002), (3, 1, 0.1)]
    assert [(r.model, r.tier, r.requests) for r in report.by_model] == \
        [("gpt-x", 3, 1), ("llama/3.1:8b", 2, 1), ("tier1-minilm", 1, 2)]
    assert [(r.day, r.requests, r.baseline_cost_usd) for r in report.by_day] == [(DAY1, 3, 0.103), (DAY2, 1, 0.003)]
    assert report.by_tier[0].savings_pct == 100.0


async def test_an_all_tenant_report_adds_every_tenant_and_breaks_them_down(ledger):
    await _record_sample(ledger)
    report = await ledger.report(None, DAY1, DAY2)
    assert report.tenant is None
    assert [(r.tenant, r.requests, r.cost_usd) for r in report.by_tenant] == [("acme", 4, 0.1002),
                                                                             ("globex", 1, 0.2)]
    assert (report.total.requests, report.total.cost_usd) == (5, 0.3002)
    assert [(r.tier, r.requests) for r in report.by_tier] == [(1, 2), (2, 1), (3, 2)]


async def test_a_tenants_report_never_shows_another_tenant(ledger):
    await _record_sample(ledger)
    report = await ledger.report("globex", DAY1, DAY2)
    assert (report.total.requests, report.total.cost_usd) == (1, 0.2)
    assert [r.model for r in report.by_model] == ["gpt-x"] and [r.day for r in report.by_day] == [DAY2]
    assert (await ledger.report("initech", DAY1, DAY2)).total.requests == 0


async def test_the_range_is_inclusive_utc_days(ledger):
    ledger.clock.now = _at(DAY2, hour=0) - 1
    await ledger.record(_entry())
    ledger.clock.now += 1  # midnight UTC
    await ledger.record(_entry())
    assert (await ledger.report("acme", DAY1, DAY1)).total.requests == 1
    assert (await ledger.report("acme", DAY2, DAY2)).total.requests == 1
    assert (await ledger.report(None, DAY1, DAY2)).total.requests == 2


async def test_a_retried_request_is_recorded_once(ledger):
    entry = _entry(cost=0.5, baseline=1.0, request_id="req-1")
    await ledger.record(entry)
    await ledger.record(entry)
    await asyncio.gather(*(ledger.record(entry) for _ in range(10)))
    assert (await ledger.report("acme", DAY1, DAY1)).total.requests == 1
    await ledger.record(_entry(request_id="req-2"))
    assert (await ledger.report("acme", DAY1, DAY1)).total.requests == 2


async def test_money_sums_exactly_to_ten_decimals(ledger):
    for cost in (0.1, 0.2, 0.0000000001):
        await ledger.record(_entry(cost=cost, baseline=cost))
    total = (await ledger.report("acme", DAY1, DAY1)).total
    assert (total.cost_usd, total.savings_usd) == (0.3000000001, 0.0)


async def test_savings_pct_is_none_without_a_baseline(ledger):
    await ledger.record(_entry(cost=0.0, baseline=0.0))
    total = (await ledger.report("acme", DAY1, DAY1)).total
    assert (total.savings_usd, total.savings_pct) == (0.0, None)


async def test_model_names_may_contain_any_character(ledger):
    odd = ['a:b|c', '["x", 1]', "naïve 模型 {t:evil}"]
    for model in odd:
        await ledger.record(_entry(model=model))
    assert sorted(r.model for r in (await ledger.report("acme", DAY1, DAY1)).by_model) == sorted(odd)


async def test_an_empty_range_reports_zeros(ledger):
    report = await ledger.report(None, DAY1, DAY1)
    assert (report.total.requests, report.total.cost_usd, report.by_tier, report.by_tenant) == (0, 0.0, [], [])


async def test_the_range_is_validated(ledger):
    with pytest.raises(ValueError, match=r"end \(2025-03-10\) is before its start \(2025-03-11\)"):
        await ledger.report("acme", DAY2, DAY1)
    with pytest.raises(ValueError, match="at most 366 days"):
        await ledger.report(None, date(2024, 1, 1), date(2025, 1, 1))
    await ledger.report(None, date(2024, 1, 1), date(2024, 12, 31))  # 366 days: a leap year


async def test_a_bad_tenant_is_refused(ledger):
    with pytest.raises(ValueError, match="tenant must be"):
        await ledger.report("a}b", DAY1, DAY1)


def test_entries_validate_their_fields():
    with pytest.raises(ValueError, match="tenant must be"):
        _entry(tenant="")
    with pytest.raises(ValueError, match="prompt_tokens must be a non-negative integer"):
        _entry(prompt=-1)
    with pytest.raises(ValueError, match="cost_usd must be a non-negative amount"):
        _entry(cost=float("inf"))
    with pytest.raises(ValueError, match="request_id must be a non-empty string"):
        UsageEntry("acme", 1, "m", 1, 1, 0.0, 0.0, "")


async def test_memory_ledger_drops_days_past_the_retention():
    clock = FakeClock()
    ledger = MemoryLedger(retention_days=2, clock=clock)
    await ledger.record(_entry())
    clock.now = _at(date(2025, 3, 12))
    await ledger.record(_entry())
    assert (await ledger.report("acme", DAY1, date(2025, 3, 12))).total.requests == 1


async def test_redis_keys_share_the_tenant_slot_and_expire(redis_raw):
    client, prefix = redis_raw
    ledger = RedisLedger(REDIS_URL, prefix, retention_days=30, clock=FakeClock())
    try:
        await ledger.record(_entry(request_id="r1"))
    finally:
        await ledger.close()
    usage, claim = f"{prefix}:{{t:acme}}:usage:2025-03-10", f"{prefix}:{{t:acme}}:usage:request:r1"
    tenants = f"{prefix}:usage:tenants:2025-03-10"
    assert sorted([k.decode() async for k in client.scan_iter(match=f"{prefix}:*")]) == sorted([usage, claim, tenants])
    for key in (usage, tenants):
        assert 30 * 86400 - 10 < await client.ttl(key) <= 30 * 86400
    assert 0 < await client.ttl(claim) <= 86400


async def test_an_unreachable_redis_raises_store_unavailable():
    ledger = RedisLedger(DEAD_URL, "tw", socket_timeout_s=0.2)
    try:
        with pytest.raises(StoreUnavailable, match="usage ledger"):
            await ledger.record(_entry())
        with pytest.raises(StoreUnavailable, match="usage ledger"):
            await ledger.report(None, DAY1, DAY1)
    finally:
        await ledger.close()
