"""The usage ledger: what each tenant's requests cost, and would have cost on the reference frontier model, by
UTC day, tier and model; what ``GET /v1/usage`` reports.

Built this way:

- Sums, not a log: one Redis hash per (tenant, day) with an integer field per (tier, model, metric), so a
  year's report reads at most 366 hashes per tenant however many requests there were. A per-day set of the
  tenants seen lets an all-tenant report find them without a SCAN.
- Money is integer units of 1e-10 USD: responses round ``cost_usd`` to 10 decimals, so the ledger's sums equal
  the sums of the responses' figures exactly.
- Recording is idempotent per request id: a script writes the sums only if it can first claim the request id
  (SET NX), so neither the client library's retry of a lost reply nor a caller's retry counts a request twice.
- A tenant's keys carry its hash tag, ``{prefix}:{t:<tenant>}:usage:...``, so the script's keys share a Redis
  Cluster slot; the tenants set, which has no tenant, is written beside the script, not inside it.
- Field names are JSON arrays, so a model name may contain any character.
- The day is the UTC day of the injectable clock when the request is recorded.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Iterable

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from serve import metrics
from serve.store import StoreUnavailable
from serve.tenancy.auth import TENANT

USD_UNITS = 10**10
MAX_REPORT_DAYS = 366
# How long a request id is remembered: retries come within seconds, and a key per request kept for the whole
# retention would cost more memory than the sums themselves.
DEDUP_TTL_S = 86_400


def _check_tenant(tenant: str) -> None:
    if not isinstance(tenant, str) or not TENANT.match(tenant):
        raise ValueError(f"tenant must be 1-128 letters, digits, '.', '_' or '-', got {tenant!r}")


@dataclass(frozen=True)
class UsageEntry:
    """One answered request, as the ledger records it; raises ValueError when a field is out of range."""

    tenant: str
    tier: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    baseline_cost_usd: float
    request_id: str

    def __post_init__(self) -> None:
        _check_tenant(self.tenant)
        for name in ("tier", "prompt_tokens", "completion_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("cost_usd", "baseline_cost_usd"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative amount of USD, got {value!r}")
        for name in ("model", "request_id"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")


@dataclass
class _Sums:
    """A cell's integer sums (money in 1e-10 USD)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: int = 0
    baseline_cost: int = 0

    @classmethod
    def of(cls, entry: UsageEntry) -> _Sums:
        return cls(1, entry.prompt_tokens, entry.completion_tokens, round(entry.cost_usd * USD_UNITS),
                   round(entry.baseline_cost_usd * USD_UNITS))

    def add(self, other: _Sums) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


_METRICS = tuple(f.name for f in fields(_Sums))
# A cell of the ledger: (tenant, day, tier, model) and its sums.
_Cell = tuple[str, date, int, str, _Sums]


class UsageRow(BaseModel):
    """Sums over a set of requests. The key fields (tier, model, day, tenant) are set on the rows of a breakdown
    by them (a by-model row carries its tier too) and None elsewhere. ``savings_pct`` is None when nothing would
    have been spent on the reference model."""

    tier: int | None = None
    model: str | None = None
    day: date | None = None
    tenant: str | None = None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    baseline_cost_usd: float
    savings_usd: float
    savings_pct: float | None

    @classmethod
    def of(cls, sums: _Sums, **key) -> UsageRow:
        """The row of ``sums``, money converted back to USD."""
        saved = sums.baseline_cost - sums.cost
        return cls(**key, requests=sums.requests, prompt_tokens=sums.prompt_tokens,
                   completion_tokens=sums.completion_tokens, cost_usd=round(sums.cost / USD_UNITS, 10),
                   baseline_cost_usd=round(sums.baseline_cost / USD_UNITS, 10),
                   savings_usd=round(saved / USD_UNITS, 10),
                   savings_pct=round(100 * saved / sums.baseline_cost, 2) if sums.baseline_cost else None)


class UsageReport(BaseModel):
    """Usage over the UTC days ``start`` to ``end`` (inclusive) of one tenant, or of every tenant when ``tenant``
    is None (then also ``by_tenant``). Breakdowns list only what has usage, sorted by their key."""

    start: date
    end: date
    tenant: str | None
    total: UsageRow
    by_tier: list[UsageRow]
    by_model: list[UsageRow]
    by_day: list[UsageRow]
    by_tenant: list[UsageRow] | None


def report_days(start: date, end: date) -> list[date]:
    """The days from ``start`` to ``end``, inclusive; ValueError for a reversed range or one over 366 days."""
    if end < start:
        raise ValueError(f"the report's end ({end}) is before its start ({start})")
    count = (end - start).days + 1
    if count > MAX_REPORT_DAYS:
        raise ValueError(f"a usage report covers at most {MAX_REPORT_DAYS} days; {start} to {end} is {count}")
    return [start + timedelta(days=i) for i in range(count)]


def _grouped(cells: Iterable[_Cell], key: Callable[[_Cell], tuple]) -> dict[tuple, _Sums]:
    groups: dict[tuple, _Sums] = defaultdict(_Sums)
    for cell in cells:
        groups[key(cell)].add(cell[4])
    return groups


def _report(tenant: str | None, start: date, end: date, cells: list[_Cell]) -> UsageReport:
    total = _Sums()
    for cell in cells:
        total.add(cell[4])

    def rows(key: Callable[[_Cell], tuple], names: tuple[str, ...]) -> list[UsageRow]:
        return [UsageRow.of(sums, **dict(zip(names, k))) for k, sums in sorted(_grouped(cells, key).items())]

    return UsageReport(
        start=start, end=end, tenant=tenant, total=UsageRow.of(total),
        by_tier=rows(lambda c: (c[2],), ("tier",)),
        by_model=rows(lambda c: (c[3], c[2]), ("model", "tier")),
        by_day=rows(lambda c: (c[1],), ("day",)),
        by_tenant=rows(lambda c: (c[0],), ("tenant",)) if tenant is None else None)


def _utc_day(now_s: float) -> date:
    return datetime.fromtimestamp(now_s, timezone.utc).date()


# KEYS: the request id's claim, the (tenant, day) hash. ARGV: claim TTL (s), hash TTL (s), then field, increment
# pairs. Returns 1 when recorded, 0 when the request id was already.
_RECORD_ONCE = """
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then return 0 end
for i = 3, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


class RedisLedger:
    """The ledger in Redis, shared by every gateway replica."""

    def __init__(self, url: str, prefix: str, retention_days: int = 400, clock: Callable[[], float] = time.time,
                 socket_timeout_s: float = 0.5) -> None:
        self._prefix, self._ttl_s, self._clock = prefix, retention_days * 86_400, clock
        # One immediate retry survives a pooled connection dropped by a Redis restart (the script makes it
        # harmless); the default policy would hold a request for seconds when Redis is really down.
        self._redis = aioredis.Redis.from_url(url, socket_timeout=socket_timeout_s, decode_responses=True,
                                              socket_connect_timeout=socket_timeout_s, retry=Retry(NoBackoff(), 1))
        self._record = self._redis.register_script(_RECORD_ONCE)

    def _usage_key(self, tenant: str, day: date) -> str:
        return f"{self._prefix}:{{t:{tenant}}}:usage:{day.isoformat()}"

    def _tenants_key(self, day: date) -> str:
        return f"{self._prefix}:usage:tenants:{day.isoformat()}"

    async def record(self, entry: UsageEntry) -> None:
        """Add ``entry`` to its tenant's sums for today (UTC), once however often it is retried.

        Raises :class:`StoreUnavailable` when Redis cannot be reached."""
        day, sums = _utc_day(self._clock()), _Sums.of(entry)
        increments = []
        for metric in _METRICS:
            increments += [json.dumps([entry.tier, entry.model, metric]), getattr(sums, metric)]
        claim = f"{self._prefix}:{{t:{entry.tenant}}}:usage:request:{entry.request_id}"
        tenants = self._tenants_key(day)
        try:
            # Not a transaction: the tenants set is in another Cluster slot, and SADD is idempotent anyway.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.sadd(tenants, entry.tenant).expire(tenants, self._ttl_s)
                await self._record(keys=[claim, self._usage_key(entry.tenant, day)],
                                   args=[DEDUP_TTL_S, self._ttl_s, *increments], client=pipe)
                await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            metrics.STORE_ERRORS.labels("ledger", "record").inc()
            raise StoreUnavailable(f"the usage ledger (Redis) is unavailable: {exc}") from exc

    async def report(self, tenant: str | None, start: date, end: date) -> UsageReport:
        """Usage of ``tenant`` (every tenant when None) over the UTC days ``start`` to ``end``, inclusive.

        Raises ValueError for a reversed range or one over 366 days, :class:`StoreUnavailable` when Redis
        cannot be reached."""
        days = report_days(start, end)
        if tenant is not None:
            _check_tenant(tenant)
        try:
            if tenant is None:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for day in days:
                        pipe.smembers(self._tenants_key(day))
                    pairs = [(t, day) for day, seen in zip(days, await pipe.execute()) for t in sorted(seen)]
            else:
                pairs = [(tenant, day) for day in days]
            async with self._redis.pipeline(transaction=False) as pipe:
                for t, day in pairs:
                    pipe.hgetall(self._usage_key(t, day))
                hashes = await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            metrics.STORE_ERRORS.labels("ledger", "report").inc()
            raise StoreUnavailable(f"the usage ledger (Redis) is unavailable: {exc}") from exc
        cells: dict[tuple[str, date, int, str], _Sums] = defaultdict(_Sums)
        for (t, day), stored in zip(pairs, hashes):
            for field, value in stored.items():
                tier, model, metric = json.loads(field)
                sums = cells[t, day, tier, model]
                setattr(sums, metric, getattr(sums, metric) + int(value))
        return _report(tenant, start, end, [(*k, sums) for k, sums in cells.items()])

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


class MemoryLedger:
    """The ledger in this process, for ``store.backend: memory``: not shared between replicas, lost on
    restart. Days older than the retention are dropped as days pass."""

    def __init__(self, retention_days: int = 400, clock: Callable[[], float] = time.time) -> None:
        self._retention, self._clock = timedelta(days=retention_days), clock
        # Methods never await while touching these, so each call is atomic with respect to other coroutines.
        self._cells: dict[tuple[str, date, int, str], _Sums] = {}
        # (tenant, request id) -> when it may be forgotten, oldest first.
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._swept: date | None = None

    def _sweep(self, now: float, today: date) -> None:
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)
        if today != self._swept:
            self._cells = {k: v for k, v in self._cells.items() if k[1] > today - self._retention}
            self._swept = today

    async def record(self, entry: UsageEntry) -> None:
        """Add ``entry`` to its tenant's sums for today (UTC), once however often it is retried."""
        now = self._clock()
        today = _utc_day(now)
        self._sweep(now, today)
        if (entry.tenant, entry.request_id) in self._seen:
            return
        self._seen[entry.tenant, entry.request_id] = now + DEDUP_TTL_S
        self._cells.setdefault((entry.tenant, today, entry.tier, entry.model), _Sums()).add(_Sums.of(entry))

    async def report(self, tenant: str | None, start: date, end: date) -> UsageReport:
        """Usage of ``tenant`` (every tenant when None) over the UTC days ``start`` to ``end``, inclusive;
        ValueError for a reversed range or one over 366 days."""
        report_days(start, end)
        if tenant is not None:
            _check_tenant(tenant)
        cells = [(*k, sums) for k, sums in self._cells.items()
                 if start <= k[1] <= end and tenant in (None, k[0])]
        return _report(tenant, start, end, cells)

    async def close(self) -> None:
        """Drop every entry."""
        self._cells.clear()
        self._seen.clear()
