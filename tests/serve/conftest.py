"""Fixtures shared by the serve tests."""

from __future__ import annotations

import pytest_asyncio

from tests.support.redis_scratch import redis_scratch


@pytest_asyncio.fixture
async def redis_raw():
    """A raw client on the real Redis and a scratch key prefix, cleaned up afterwards."""
    async with redis_scratch() as scratch:
        yield scratch
