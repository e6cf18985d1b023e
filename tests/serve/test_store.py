"""Conversation store tests: Redis-backed ones use the real Redis at REDIS_URL."""

import contextlib
import logging

import pytest
import pytest_asyncio

from serve.store import (
    MemoryConversationStore,
    RedisConversationStore,
    StoreUnavailable,
    open_store,
)
from tests.support.redis_scratch import DEAD_URL, REDIS_URL, redis_scratch

pytestmark = pytest.mark.asyncio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture(params=["redis", "memory"])
async def make_store(request):
    """Factory for a store of each backend in turn; closes what it made."""
    made = []
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "redis":
            _, prefix = await stack.enter_async_context(redis_scratch())

        def factory(**kwargs):
            if request.param == "redis":
                made.append(RedisConversationStore(REDIS_URL, prefix=prefix, **kwargs))
            else:
                made.append(MemoryConversationStore(**kwargs))
            return made[-1]

        factory.backend = request.param
        yield factory
        for store in made:
            await store.close()


async def test_round_trip(make_store):
    store = make_store()
    assert store.backend == make_store.backend
    assert await store.load("acme", "c1") == []
    msgs = [{"role": "user", "content": "hi ü"},
            {"role": "assistant", "content": "hello", "tierwise": {"tier": 3, "cost": 0.01}}]
    await store.append("acme", "c1", msgs)
    assert await store.load("acme", "c1") == msgs
    assert await store.ping() is True


async def test_appends_are_ordered_and_accumulate(make_store):
    store = make_store()
    await store.append("acme", "c1", [{"n": 1}, {"n": 2}])
    await store.append("acme", "c1", [{"n": 3}])
    await store.append("acme", "c1", [])
    assert await store.load("acme", "c1") == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_trims_to_newest_max_messages(make_store):
    store = make_store(max_messages=3)
    await store.append("acme", "c1", [{"n": i} for i in range(2)])
    await store.append("acme", "c1", [{"n": i} for i in range(2, 6)])
    assert await store.load("acme", "c1") == [{"n": 3}, {"n": 4}, {"n": 5}]


async def test_tenants_are_isolated(make_store):
    store = make_store()
    await store.append("acme", "shared-id", [{"who": "acme"}])
    await store.append("globex", "shared-id", [{"who": "globex"}])
    assert await store.load("acme", "shared-id") == [{"who": "acme"}]
    assert await store.load("globex", "shared-id") == [{"who": "globex"}]
    assert await store.load("initech", "shared-id") == []


@pytest.mark.parametrize("tenant, conversation_id", [
    ("acme", ""), ("acme", "x" * 129), ("acme", "a b"), ("acme", "a}b"), ("acme", "a*"),
    ("acme", "c1\n"), ("acme", "ü"), ("", "c1"), ("a{b", "c1"), ("acme", None),
])
async def test_invalid_ids_rejected(make_store, tenant, conversation_id):
    store = make_store()
    with pytest.raises(ValueError, match="1-128 characters"):
        await store.append(tenant, conversation_id, [{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="1-128 characters"):
        await store.load(tenant, conversation_id)


async def test_longest_valid_id_accepted(make_store):
    store = make_store()
    cid = "a.B_0:-" + "x" * 121
    await store.append("t" * 128, cid, [{"n": 1}])
    assert await store.load("t" * 128, cid) == [{"n": 1}]


async def test_append_is_atomic(make_store):
    store = make_store()
    await store.append("acme", "c1", [{"n": 0}])
    for bad in (object(), float("nan")):
        with pytest.raises((TypeError, ValueError)):
            await store.append("acme", "c1", [{"n": 1}, {"bad": bad}, {"n": 2}])
    assert await store.load("acme", "c1") == [{"n": 0}]


async def test_redis_key_layout_and_sliding_ttl(redis_raw):
    raw, prefix = redis_raw
    store = RedisConversationStore(REDIS_URL, prefix=prefix, ttl_s=30)
    try:
        await store.append("acme", "c1", [{"n": 1}])
        key = f"{prefix}:{{t:acme}}:conv:c1"
        assert 0 < await raw.ttl(key) <= 30
        await raw.expire(key, 5)
        await store.load("acme", "c1")
        assert 25 < await raw.ttl(key) <= 30
        await raw.expire(key, 5)
        await store.append("acme", "c1", [{"n": 2}])
        assert 25 < await raw.ttl(key) <= 30
    finally:
        await store.close()


async def test_redis_unreachable_raises_store_unavailable():
    store = RedisConversationStore(DEAD_URL)
    try:
        assert await store.ping() is False
        for call in (store.load("acme", "c1"), store.append("acme", "c1", [{"n": 1}])):
            with pytest.raises(StoreUnavailable) as info:
                await call
            assert "127.0.0.1:1" in str(info.value)
            assert info.value.__cause__ is not None
    finally:
        await store.close()


async def test_open_store_redis_unreachable_names_url_without_password():
    with pytest.raises(StoreUnavailable, match=r"redis://:\*\*\*@127\.0\.0\.1:1") as info:
        await open_store("redis", "redis://:s3cret@127.0.0.1:1", "tw", 60, 10)
    assert "s3cret" not in str(info.value)


async def test_open_store_auto_falls_back_to_memory_with_warning(caplog):
    caplog.set_level(logging.WARNING, logger="serve.store")
    store = await open_store("auto", DEAD_URL, "tw", 60, 10)
    assert isinstance(store, MemoryConversationStore)
    (record,) = [r for r in caplog.records if r.name == "serve.store"]
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    for phrase in ("in-process", "not shared between replicas", "lost on restart", "TIERWISE_STORE__URL"):
        assert phrase in text


async def test_open_store_selects_backend(redis_raw):
    _, prefix = redis_raw
    for backend, cls in (("redis", RedisConversationStore), ("auto", RedisConversationStore),
                         ("memory", MemoryConversationStore)):
        store = await open_store(backend, REDIS_URL, prefix, 60, 10)
        assert isinstance(store, cls)
        await store.close()
    with pytest.raises(ValueError, match="unknown store backend"):
        await open_store("etcd", REDIS_URL, prefix, 60, 10)


async def test_memory_expiry_slides_on_load():
    clock = FakeClock()
    store = MemoryConversationStore(ttl_s=10, clock=clock)
    await store.append("acme", "c1", [{"n": 1}])
    clock.now += 9
    assert await store.load("acme", "c1") == [{"n": 1}]
    clock.now += 9
    assert await store.load("acme", "c1") == [{"n": 1}]
    clock.now += 10
    assert await store.load("acme", "c1") == []
    await store.append("acme", "c1", [{"n": 2}])
    assert await store.load("acme", "c1") == [{"n": 2}]


async def test_memory_store_returns_copies():
    store = MemoryConversationStore()
    msg = {"role": "user", "content": "hi"}
    await store.append("acme", "c1", [msg])
    msg["content"] = "changed"
    (loaded,) = await store.load("acme", "c1")
    loaded["content"] = "mutated"
    assert await store.load("acme", "c1") == [{"role": "user", "content": "hi"}]


async def test_a_retried_turn_is_written_once(make_store):
    store = make_store()
    turn = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    await store.append("acme", "c1", turn, turn_id="turn-1")
    await store.append("acme", "c1", turn, turn_id="turn-1")
    await store.append("acme", "c1", [{"role": "user", "content": "again"}], turn_id="turn-2")
    assert [m["content"] for m in await store.load("acme", "c1")] == ["hi", "hello", "again"]
    # Turn ids are per conversation: the same id elsewhere is another turn.
    await store.append("acme", "c2", turn, turn_id="turn-1")
    assert len(await store.load("acme", "c2")) == 2


async def test_the_stored_limit_holds_what_one_request_may_carry(settings):
    assert settings.store.max_messages > settings.http.max_messages
