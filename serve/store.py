"""Conversation history store: Redis for shared, durable-enough state; in-process memory as a fallback."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Callable, Protocol
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from serve import metrics

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class StoreUnavailable(Exception):
    """The backing store cannot be reached; the caller answers 503 + Retry-After."""


class ConversationStore(Protocol):
    """Conversation history keyed by tenant and conversation id."""

    backend: str

    async def load(self, tenant: str, conversation_id: str) -> list[dict]:
        """Return the stored messages, oldest first ([] when unknown), and refresh the TTL."""

    async def append(self, tenant: str, conversation_id: str, messages: list[dict], turn_id: str | None = None) -> None:
        """Atomically add all messages (or none) as turn ``turn_id``, once however often it is retried; keep
        the newest max_messages, refresh the TTL."""

    async def load_summaries(self, tenant: str, conversation_id: str) -> dict[int, str]:
        """Summaries of the conversation's first n messages, by n ({} when none)."""

    async def save_summary(self, tenant: str, conversation_id: str, upto: int, text: str) -> None:
        """Keep the summary of the first ``upto`` messages with the conversation (same TTL)."""

    async def ping(self) -> bool:
        """Return whether the backing store answers."""

    async def close(self) -> None:
        """Release connections."""


def _validate(tenant: str, conversation_id: str) -> None:
    # The charset excludes '{' and '}', so neither id can break out of its slot in the key.
    for name, value in (("tenant", tenant), ("conversation_id", conversation_id)):
        if not isinstance(value, str) or not _ID_RE.fullmatch(value):
            raise ValueError(f"{name} must be 1-128 characters of [A-Za-z0-9._:-], got {value!r}")


def _serialise(messages: list[dict]) -> list[str]:
    # Serialising everything up front means a bad message fails the batch before anything is written.
    return [json.dumps(m, ensure_ascii=False, allow_nan=False) for m in messages]


def _redact(url: str) -> str:
    """Return url without its password, so it can go into logs and error messages."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if ":" not in userinfo:
        return url
    return parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***{at}{hostport}").geturl()


# KEYS: the conversation's list, its set of written turn ids. ARGV: TTL, max messages, turn id, messages.
_APPEND_ONCE = """
if redis.call('SADD', KEYS[2], ARGV[3]) == 0 then return 0 end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 4))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


class RedisConversationStore:
    """Conversation store backed by one Redis list per conversation."""

    backend = "redis"

    def __init__(self, url: str, prefix: str = "tierwise", ttl_s: int = 86400, max_messages: int = 200,
                 socket_timeout_s: float = 0.5) -> None:
        self.url = _redact(url)
        self._prefix, self._ttl_s, self._max = prefix, ttl_s, max_messages
        # One immediate retry survives a pooled connection dropped by a Redis restart; the default policy
        # (ten retries with backoff) would hold a request for seconds when Redis is really down.
        self._redis = aioredis.Redis.from_url(url, socket_timeout=socket_timeout_s,
                                              socket_connect_timeout=socket_timeout_s,
                                              retry=Retry(NoBackoff(), 1))
        self._append_script = self._redis.register_script(_APPEND_ONCE)

    def _key(self, tenant: str, conversation_id: str) -> str:
        _validate(tenant, conversation_id)
        # The hash tag keeps a tenant's conversations on one Redis Cluster slot.
        return f"{self._prefix}:{{t:{tenant}}}:conv:{conversation_id}"

    async def load(self, tenant: str, conversation_id: str) -> list[dict]:
        """Return the stored messages, oldest first ([] when unknown), and refresh the TTL."""
        key = self._key(tenant, conversation_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                raw, _ = await pipe.lrange(key, 0, -1).expire(key, self._ttl_s).execute()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            metrics.STORE_ERRORS.labels("conversations", "load").inc()
            raise StoreUnavailable(f"Redis at {self.url} is unavailable: {exc}") from exc
        return [json.loads(item) for item in raw]

    async def append(self, tenant: str, conversation_id: str, messages: list[dict], turn_id: str | None = None) -> None:
        """Atomically add all messages (or none) as turn ``turn_id`` (one is made when None), once however
        often the write is retried; keep the newest max_messages, refresh the TTL.

        The client library retries a command whose reply it lost; a script that first records the turn id
        makes that retry, and any caller's retry of the same turn, a no-op."""
        key = self._key(tenant, conversation_id)
        payload = _serialise(messages)
        if not payload:
            return
        turns = f"{key}:turns"
        try:
            await self._append_script(keys=[key, turns],
                                      args=[self._ttl_s, self._max, turn_id or uuid.uuid4().hex, *payload])
        except (RedisConnectionError, RedisTimeoutError) as exc:
            metrics.STORE_ERRORS.labels("conversations", "append").inc()
            raise StoreUnavailable(f"Redis at {self.url} is unavailable: {exc}") from exc

    def _summary_key(self, tenant: str, conversation_id: str) -> str:
        return self._key(tenant, conversation_id) + ":summaries"

    async def load_summaries(self, tenant: str, conversation_id: str) -> dict[int, str]:
        """Summaries of the conversation's first n messages, by n ({} when none)."""
        key = self._summary_key(tenant, conversation_id)
        try:
            raw = await self._redis.hgetall(key)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            metrics.STORE_ERRORS.labels("conversations", "load_summaries").inc()
            raise StoreUnavailable(f"Redis at {self.url} is unavailable: {exc}") from exc
        return {int(k): v.decode() if isinstance(v, bytes) else v for k, v in raw.items()}

    async def save_summary(self, tenant: str, conversation_id: str, upto: int, text: str) -> None:
        """Keep the summary of the first ``upto`` messages with the conversation (same TTL)."""
        key = self._summary_key(tenant, conversation_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                await pipe.hset(key, str(upto), text).expire(key, self._ttl_s).execute()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            metrics.STORE_ERRORS.labels("conversations", "save_summary").inc()
            raise StoreUnavailable(f"Redis at {self.url} is unavailable: {exc}") from exc

    async def ping(self) -> bool:
        """Return whether Redis answers a PING within the socket timeout."""
        try:
            return bool(await self._redis.ping())
        except (RedisConnectionError, RedisTimeoutError):
            return False

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


class MemoryConversationStore:
    """Process-local conversation store: not shared between replicas and lost on restart."""

    backend = "memory"

    def __init__(self, ttl_s: int = 86400, max_messages: int = 200, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s, self._max, self._clock = ttl_s, max_messages, clock
        # (tenant, conversation_id) -> (expiry deadline, JSON strings). Methods never await while
        # touching this dict, so each call is atomic with respect to other coroutines.
        self._data: dict[tuple[str, str], tuple[float, list[str]]] = {}
        self._summaries: dict[tuple[str, str], dict[int, str]] = {}
        self._turns: dict[tuple[str, str], set[str]] = {}
        self._next_sweep = 0.0

    def _live(self, key: tuple[str, str], now: float) -> list[str]:
        entry = self._data.get(key)
        return entry[1] if entry and entry[0] > now else []

    def _sweep(self, now: float) -> None:
        # Expired conversations nobody reads again would otherwise stay in memory forever.
        if now >= self._next_sweep:
            self._data = {k: v for k, v in self._data.items() if v[0] > now}
            self._summaries = {k: v for k, v in self._summaries.items() if k in self._data}
            self._turns = {k: v for k, v in self._turns.items() if k in self._data}
            self._next_sweep = now + min(self._ttl_s, 60)

    async def load(self, tenant: str, conversation_id: str) -> list[dict]:
        """Return the stored messages, oldest first ([] when unknown), and refresh the TTL."""
        _validate(tenant, conversation_id)
        key, now = (tenant, conversation_id), self._clock()
        items = self._live(key, now)
        if items:
            self._data[key] = (now + self._ttl_s, items)
        return [json.loads(item) for item in items]

    async def append(self, tenant: str, conversation_id: str, messages: list[dict], turn_id: str | None = None) -> None:
        """Atomically add all messages (or none) as turn ``turn_id``, once however often it is retried; keep
        the newest max_messages, refresh the TTL."""
        _validate(tenant, conversation_id)
        payload = _serialise(messages)
        if not payload:
            return
        key, now = (tenant, conversation_id), self._clock()
        self._sweep(now)
        live = self._live(key, now)
        if not live:
            # An expired conversation's turn ids went with it.
            self._turns.pop(key, None)
        turns = self._turns.setdefault(key, set())
        if turn_id is not None and turn_id in turns:
            return
        turns.add(turn_id or uuid.uuid4().hex)
        self._data[key] = (now + self._ttl_s, (live + payload)[-self._max:])

    async def load_summaries(self, tenant: str, conversation_id: str) -> dict[int, str]:
        """Summaries of the conversation's first n messages, by n ({} when none)."""
        _validate(tenant, conversation_id)
        key = (tenant, conversation_id)
        return dict(self._summaries.get(key, {})) if self._live(key, self._clock()) else {}

    async def save_summary(self, tenant: str, conversation_id: str, upto: int, text: str) -> None:
        """Keep the summary of the first ``upto`` messages with the conversation."""
        _validate(tenant, conversation_id)
        self._summaries.setdefault((tenant, conversation_id), {})[upto] = text

    async def ping(self) -> bool:
        """Always True: the store lives in this process."""
        return True

    async def close(self) -> None:
        """Drop all conversations."""
        self._data.clear()
        self._summaries.clear()


async def open_store(backend: str, url: str, prefix: str, ttl_s: int, max_messages: int) -> ConversationStore:
    """Open the configured store.

    "redis" raises StoreUnavailable if Redis does not answer; "memory" is process-local; "auto" uses Redis
    when it answers and otherwise falls back to memory with a warning.
    """
    if backend == "memory":
        return MemoryConversationStore(ttl_s=ttl_s, max_messages=max_messages)
    if backend not in ("redis", "auto"):
        raise ValueError(f"unknown store backend {backend!r}; expected 'redis', 'memory' or 'auto'")
    store = RedisConversationStore(url, prefix=prefix, ttl_s=ttl_s, max_messages=max_messages)
    if await store.ping():
        return store
    await store.close()
    if backend == "redis":
        raise StoreUnavailable(f"Redis at {store.url} is unreachable")
    log.warning(
        "Redis at %s is unreachable; using the in-process conversation store. History is not shared "
        "between replicas and is lost on restart. Set TIERWISE_STORE__URL to a reachable Redis "
        "(e.g. redis://redis:6379/0) to share it.", store.url)
    return MemoryConversationStore(ttl_s=ttl_s, max_messages=max_messages)
