"""API keys: each maps to a tenant, whose conversations only its keys can read.

Keys live in Redis (shared by every gateway replica) as a hash from the key's SHA-256 to its record, so a
leaked Redis dump leaks no usable key. ``tierwise keys create|list|revoke`` manages them; a key is shown
once, when it is created. A replica remembers a lookup for ``CACHE_S`` seconds, so a revoked key stops
working within that time.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from serve import metrics
from serve.store import StoreUnavailable

CACHE_S = 5.0
KEY_PREFIX = "tw-"
TENANT = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def digest(key: str) -> str:
    """What is stored of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """A key's public part: its id (shown in listings and used to revoke it), tenant, creation time, and
    whether it is an admin key (one that may read every tenant's usage)."""

    id: str
    tenant: str
    created: int
    admin: bool = False


def _hash_name(prefix: str) -> str:
    return f"{prefix}:apikeys"


class KeyAdmin:
    """Create, list and revoke keys (the ``tierwise keys`` command; synchronous)."""

    def __init__(self, url: str, prefix: str):
        self._redis, self._hash = redis.Redis.from_url(url), _hash_name(prefix)

    def create(self, tenant: str, admin: bool = False) -> tuple[KeyRecord, str]:
        """A new key for ``tenant``: its record and the key itself, which is not stored."""
        if not TENANT.match(tenant):
            raise ValueError(f"tenant {tenant!r}: use 1-128 letters, digits, '.', '_' or '-'")
        record = KeyRecord(secrets.token_hex(4), tenant, int(time.time()), admin)
        key = f"{KEY_PREFIX}{record.id}-{secrets.token_urlsafe(32)}"
        self._redis.hset(self._hash, digest(key), json.dumps(record.__dict__))
        return record, key

    def list(self) -> list[KeyRecord]:
        """Every key's record, oldest first."""
        records = [KeyRecord(**json.loads(v)) for v in self._redis.hvals(self._hash)]
        return sorted(records, key=lambda r: r.created)

    def revoke(self, key_id: str) -> bool:
        """Delete the key with id ``key_id``; False when there is none."""
        for field, value in self._redis.hgetall(self._hash).items():
            if json.loads(value)["id"] == key_id:
                return bool(self._redis.hdel(self._hash, field))
        return False


class KeyLookup:
    """The gateway's side: the record of a presented key, or None for an unknown or revoked one."""

    def __init__(self, url: str, prefix: str, socket_timeout_s: float = 0.5):
        self._redis = aioredis.Redis.from_url(url, socket_timeout=socket_timeout_s,
                                              socket_connect_timeout=socket_timeout_s)
        self._hash = _hash_name(prefix)
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}

    async def record_of(self, key: str) -> KeyRecord | None:
        """The key's record; raises :class:`StoreUnavailable` when Redis cannot say."""
        hashed, now = digest(key), time.monotonic()
        cached = self._cache.get(hashed)
        if cached and cached[0] > now:
            return cached[1]
        try:
            raw = await self._redis.hget(self._hash, hashed)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            metrics.STORE_ERRORS.labels("keys", "lookup").inc()
            raise StoreUnavailable(f"the key store is unavailable: {exc}") from exc
        record = KeyRecord(**json.loads(raw)) if raw else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[hashed] = (now + CACHE_S, record)
        return record

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()
