"""Per-tenant limits, checked before any paid call: requests per minute, tokens per minute and spend per UTC day.

Built this way because several gateway replicas admit requests for the same tenant at once:

- One Lua script checks every configured limit and consumes from all of them only when all pass, so a refused
  request consumes nothing and two replicas cannot both take a tenant's last slot.
- The two rates are GCRA (generic cell rate algorithm) in its continuous-state leaky-bucket form, which ITU-T
  I.371 defines as equivalent to virtual scheduling: a bucket's level drains at the limit's rate and may hold
  one minute's worth (the burst). Levels are kept as integers scaled by the milliseconds in a minute, so a
  bucket drains by exactly ``rate`` per millisecond, Lua's doubles add them exactly, a burst is exactly one
  minute's worth, and a retry at exactly ``retry_after_s`` passes. A level counts requests or tokens, not
  time, so a limit changed by a config reload applies at once to what the tenant has already used.
- Tokens: a request is admitted when its prompt fits in what is left of the minute's tokens, and its prompt
  is charged then; :meth:`charge` adds the answer's tokens afterwards whatever the level, since the answer's
  length is unknown beforehand. A tenant can thus go into debt, and its next requests wait until it is paid.
  A prompt larger than the whole limit is admitted when the bucket is clear, or it could never pass.
- Spend: an integer counter per tenant and UTC day, in units of 1e-10 USD (responses round ``cost_usd`` to
  10 decimals, so the day's sum is exact). A request is admitted while the day's spend is under the budget;
  the request that crosses it is charged in full.
- Time comes from an injectable clock and is passed to the script (tests run on a fake clock), so replicas
  need synchronised clocks (NTP): a replica whose clock runs ahead drains buckets early.
- Keys carry the tenant's hash tag, ``{prefix}:{t:<tenant>}:limit:...``, so a script's keys share a Redis
  Cluster slot; buckets expire a minute after they would be empty, day counters after two days.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Protocol

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from serve import metrics
from serve.store import StoreUnavailable
from serve.tenancy.auth import TENANT

MINUTE_MS = 60_000
DAY_S = 86_400
USD_UNITS = 10**10
SPEND_TTL_S = 2 * DAY_S
# Script results: which limit refused (0: none), in the order they are checked.
_REFUSED = {1: "requests_per_minute", 2: "tokens_per_minute", 3: "spend_per_day_usd"}


class TenantLimits(BaseModel):
    """One tenant's limits; None means unlimited."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    spend_per_day_usd: float | None = Field(None, ge=0)


class Limits(Protocol):
    """What the limiters read of a tenant's limits: :class:`TenantLimits` or any model with the same fields."""

    @property
    def requests_per_minute(self) -> int | None: ...

    @property
    def tokens_per_minute(self) -> int | None: ...

    @property
    def spend_per_day_usd(self) -> float | None: ...


class LimitExceeded(Exception):
    """A request refused by one of its tenant's limits.

    ``limit`` is the field name of the limit (``requests_per_minute``, ``tokens_per_minute`` or
    ``spend_per_day_usd``), ``value`` its configured value, ``retry_after_s`` (> 0) when a retry can pass."""

    def __init__(self, limit: str, value: float, retry_after_s: float):
        self.limit, self.value, self.retry_after_s = limit, value, retry_after_s
        if limit == "spend_per_day_usd":
            message = (f"daily spend limit reached (spend_per_day_usd: ${value:g}); retry after midnight UTC, "
                       f"in {retry_after_s:.3f} s")
        else:
            message = f"rate limit reached ({limit}: {value}); retry in {retry_after_s:.3f} s"
        super().__init__(message)


def _exceeded(code: int, limits: Limits, retry_ms: int, now_s: float) -> LimitExceeded:
    limit = _REFUSED[code]
    # A day has exactly 86400 s of Unix time (leap seconds are not counted), so midnight UTC is a multiple.
    retry_s = DAY_S - now_s % DAY_S if code == 3 else retry_ms / 1000
    return LimitExceeded(limit, getattr(limits, limit), retry_s)


def _unlimited(limits: Limits) -> bool:
    return limits.requests_per_minute is None and limits.tokens_per_minute is None and limits.spend_per_day_usd is None


def _check_tenant(tenant: str) -> None:
    if not isinstance(tenant, str) or not TENANT.match(tenant):
        raise ValueError(f"tenant must be 1-128 letters, digits, '.', '_' or '-', got {tenant!r}")


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _usd_units(name: str, usd: float) -> int:
    if not usd >= 0:  # also refuses NaN
        raise ValueError(f"{name} must be a non-negative amount of USD, got {usd!r}")
    return round(usd * USD_UNITS)


def _utc_day(now_s: float) -> str:
    return datetime.fromtimestamp(now_s, timezone.utc).date().isoformat()


# Shared by both scripts. Levels are scaled by MINUTE_MS, so a bucket of limit r per minute drains r per ms and
# holds r * MINUTE_MS; every quantity is an integer below 2^53, which Lua's doubles hold exactly.
_BUCKET_LUA = """
local MINUTE = 60000
local now = tonumber(ARGV[1])

-- The smallest q with q * d >= n: n / d alone can round across an integer when n is large.
local function ceil_div(n, d)
  local q = math.ceil(n / d)
  if q * d < n then return q + 1 end
  if (q - 1) * d >= n then return q - 1 end
  return q
end

-- The bucket's level now and the time it refers to. A replica whose clock lags another's sees no drain
-- rather than moving the bucket's time backwards.
local function drained(key, rate)
  local state = redis.call('HMGET', key, 'level', 'at')
  local level, at = tonumber(state[1]) or 0, tonumber(state[2]) or now
  if now <= at then return level, at end
  return math.max(0, level - (now - at) * rate), now
end

local function store(key, rate, level, at)
  redis.call('HSET', key, 'level', string.format('%d', level), 'at', string.format('%d', at))
  redis.call('PEXPIRE', key, ceil_div(level, rate) + MINUTE)
end
"""

# KEYS: request bucket, token bucket, the day's spend counter. ARGV: now (ms), requests per minute, tokens per
# minute, prompt tokens, budget (1e-10 USD); an empty limit is unlimited.
# Returns {0, 0} when admitted, else {refused limit (see _REFUSED), ms until a retry can pass}.
_ADMIT = _BUCKET_LUA + """
local rpm, tpm, prompt, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local requests, requests_at, tokens, tokens_at
if rpm then
  requests, requests_at = drained(KEYS[1], rpm)
  local excess = requests + MINUTE - rpm * MINUTE
  if excess > 0 then return {1, ceil_div(excess, rpm)} end
end
if tpm then
  tokens, tokens_at = drained(KEYS[2], tpm)
  local excess = tokens + math.min(prompt, tpm) * MINUTE - tpm * MINUTE
  if excess > 0 then return {2, ceil_div(excess, tpm)} end
end
if budget and (tonumber(redis.call('GET', KEYS[3])) or 0) >= budget then return {3, 0} end
if rpm then store(KEYS[1], rpm, requests + MINUTE, requests_at) end
if tpm then store(KEYS[2], tpm, tokens + prompt * MINUTE, tokens_at) end
return {0, 0}
"""

# KEYS: token bucket, the day's spend counter. ARGV: now (ms), tokens per minute (empty: unlimited), completion
# tokens, cost (1e-10 USD; empty: no budget), the counter's TTL (s).
_CHARGE = _BUCKET_LUA + """
local tpm = tonumber(ARGV[2])
if tpm then
  local tokens, at = drained(KEYS[1], tpm)
  store(KEYS[1], tpm, tokens + tonumber(ARGV[3]) * MINUTE, at)
end
if ARGV[4] ~= '' then
  redis.call('INCRBY', KEYS[2], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return 0
"""


def _arg(value: int | None) -> int | str:
    return "" if value is None else value


class RedisLimiter:
    """Limits shared by every gateway replica through Redis."""

    def __init__(self, url: str, prefix: str, clock: Callable[[], float] = time.time,
                 socket_timeout_s: float = 0.5) -> None:
        self._prefix, self._clock = prefix, clock
        # One immediate retry survives a pooled connection dropped by a Redis restart; the default policy would
        # hold a request for seconds when Redis is really down.
        self._redis = aioredis.Redis.from_url(url, socket_timeout=socket_timeout_s,
                                              socket_connect_timeout=socket_timeout_s, retry=Retry(NoBackoff(), 1))
        self._admit = self._redis.register_script(_ADMIT)
        self._charge = self._redis.register_script(_CHARGE)

    def _keys(self, tenant: str, day: str) -> tuple[str, str, str]:
        _check_tenant(tenant)
        # The hash tag keeps a tenant's limit keys, which one script touches together, on one Cluster slot.
        base = f"{self._prefix}:{{t:{tenant}}}:limit"
        return f"{base}:rpm", f"{base}:tpm", f"{base}:spend:{day}"

    async def admit(self, tenant: str, limits: Limits, prompt_tokens: int) -> None:
        """Consume one request and ``prompt_tokens`` from ``tenant``'s limits, or raise :class:`LimitExceeded`
        (consuming nothing) for the first that refuses, in the order requests, tokens, spend.

        Raises :class:`StoreUnavailable` when Redis cannot be reached. A tenant without limits costs no round
        trip."""
        _check_count("prompt_tokens", prompt_tokens)
        if _unlimited(limits):
            _check_tenant(tenant)
            return
        now = self._clock()
        budget = limits.spend_per_day_usd
        args = [round(now * 1000), _arg(limits.requests_per_minute), _arg(limits.tokens_per_minute), prompt_tokens,
                _arg(None if budget is None else _usd_units("spend_per_day_usd", budget))]
        try:
            code, retry_ms = await self._admit(keys=self._keys(tenant, _utc_day(now)), args=args)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            metrics.STORE_ERRORS.labels("limits", "admit").inc()
            raise StoreUnavailable(f"the limits store (Redis) is unavailable: {exc}") from exc
        if code:
            raise _exceeded(code, limits, retry_ms, now)

    async def charge(self, tenant: str, limits: Limits, completion_tokens: int, cost_usd: float) -> None:
        """Add an answer's ``completion_tokens`` to ``tenant``'s token bucket and ``cost_usd`` to its day's
        spend, whatever their levels (they may go into debt). Only configured limits are charged.

        Raises :class:`StoreUnavailable` when Redis cannot be reached."""
        _check_count("completion_tokens", completion_tokens)
        cost = _usd_units("cost_usd", cost_usd)
        if limits.tokens_per_minute is None and limits.spend_per_day_usd is None:
            _check_tenant(tenant)
            return
        now = self._clock()
        _, bucket, spend = self._keys(tenant, _utc_day(now))
        args = [round(now * 1000), _arg(limits.tokens_per_minute), completion_tokens,
                _arg(None if limits.spend_per_day_usd is None else cost), SPEND_TTL_S]
        try:
            await self._charge(keys=[bucket, spend], args=args)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            metrics.STORE_ERRORS.labels("limits", "charge").inc()
            raise StoreUnavailable(f"the limits store (Redis) is unavailable: {exc}") from exc

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


@dataclass
class _Bucket:
    level: int = 0  # scaled by MINUTE_MS, as in the script
    at: int = 0


def _drained(bucket: _Bucket, rate: int, now_ms: int) -> _Bucket:
    if now_ms <= bucket.at:
        return _Bucket(bucket.level, bucket.at)
    return _Bucket(max(0, bucket.level - (now_ms - bucket.at) * rate), now_ms)


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


class MemoryLimiter:
    """The same limits in this process, for ``store.backend: memory``.

    Each replica counts only its own requests, so with several replicas a tenant gets each limit once per
    replica: use it for a single replica only. Memory holds two buckets and one day's spend per tenant seen."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # Methods never await while touching these, so each call is atomic with respect to other coroutines.
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._spend: dict[str, tuple[str, int]] = {}  # tenant -> (UTC day, spent in 1e-10 USD)

    def _spent(self, tenant: str, day: str) -> int:
        spent_day, spent = self._spend.get(tenant, (day, 0))
        return spent if spent_day == day else 0

    async def admit(self, tenant: str, limits: Limits, prompt_tokens: int) -> None:
        """Consume one request and ``prompt_tokens`` from ``tenant``'s limits, or raise :class:`LimitExceeded`
        (consuming nothing) for the first that refuses, in the order requests, tokens, spend."""
        _check_tenant(tenant)
        _check_count("prompt_tokens", prompt_tokens)
        if _unlimited(limits):
            return
        now = self._clock()
        now_ms, rpm, tpm = round(now * 1000), limits.requests_per_minute, limits.tokens_per_minute
        if rpm is not None:
            requests = _drained(self._buckets.get((tenant, "rpm"), _Bucket()), rpm, now_ms)
            excess = requests.level + MINUTE_MS - rpm * MINUTE_MS
            if excess > 0:
                raise _exceeded(1, limits, _ceil_div(excess, rpm), now)
        if tpm is not None:
            tokens = _drained(self._buckets.get((tenant, "tpm"), _Bucket()), tpm, now_ms)
            excess = tokens.level + min(prompt_tokens, tpm) * MINUTE_MS - tpm * MINUTE_MS
            if excess > 0:
                raise _exceeded(2, limits, _ceil_div(excess, tpm), now)
        budget = limits.spend_per_day_usd
        if budget is not None and self._spent(tenant, _utc_day(now)) >= _usd_units("spend_per_day_usd", budget):
            raise _exceeded(3, limits, 0, now)
        if rpm is not None:
            self._buckets[tenant, "rpm"] = _Bucket(requests.level + MINUTE_MS, requests.at)
        if tpm is not None:
            self._buckets[tenant, "tpm"] = _Bucket(tokens.level + prompt_tokens * MINUTE_MS, tokens.at)

    async def charge(self, tenant: str, limits: Limits, completion_tokens: int, cost_usd: float) -> None:
        """Add an answer's ``completion_tokens`` to ``tenant``'s token bucket and ``cost_usd`` to its day's
        spend, whatever their levels. Only configured limits are charged."""
        _check_tenant(tenant)
        _check_count("completion_tokens", completion_tokens)
        cost = _usd_units("cost_usd", cost_usd)
        now = self._clock()
        if limits.tokens_per_minute is not None:
            tokens = _drained(self._buckets.get((tenant, "tpm"), _Bucket()), limits.tokens_per_minute,
                              round(now * 1000))
            self._buckets[tenant, "tpm"] = _Bucket(tokens.level + completion_tokens * MINUTE_MS, tokens.at)
        if limits.spend_per_day_usd is not None:
            day = _utc_day(now)
            self._spend[tenant] = (day, self._spent(tenant, day) + cost)

    async def close(self) -> None:
        """Forget every tenant's usage."""
        self._buckets.clear()
        self._spend.clear()
