"""A scratch corner of the real Redis for tests: a random key prefix, whose keys are deleted afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest
import redis.asyncio as aioredis

REDIS_URL = os.environ.get("TIERWISE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# Nothing listens there: what a Redis outage looks like to a client.
DEAD_URL = "redis://127.0.0.1:1"


@contextlib.asynccontextmanager
async def redis_scratch():
    """Yield a raw client plus a random key prefix; every key under the prefix is deleted afterwards."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means there is no Redis to test against
        await client.aclose()
        pytest.fail(f"no Redis at {REDIS_URL} (start one: see README): {exc}")
    prefix = f"tw-test-{uuid.uuid4().hex}"
    try:
        yield client, prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
