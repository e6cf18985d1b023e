"""API keys against the real Redis: created hashed, looked up, revoked; tenants kept apart."""

from __future__ import annotations

import uuid

import pytest

from serve.tenancy.auth import KeyAdmin, KeyLookup, digest
from serve.api.errors import ApiError
from tests.serve.api.test_serving_chat import make, request, tokenizers  # noqa: F401  (the services over stand-ins)

REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture()
def prefix():
    import redis

    name = f"test-auth-{uuid.uuid4().hex[:8]}"
    yield name
    r = redis.Redis.from_url(REDIS_URL)
    r.delete(f"{name}:apikeys")


async def test_keys_are_stored_hashed_looked_up_and_revoked(prefix):
    admin = KeyAdmin(REDIS_URL, prefix)
    record, key = admin.create("acme")
    import redis

    stored = redis.Redis.from_url(REDIS_URL).hgetall(f"{prefix}:apikeys")
    assert list(stored) == [digest(key).encode()] and key.encode() not in b"".join(stored.values())
    lookup = KeyLookup(REDIS_URL, prefix)
    assert await lookup.record_of(key) == record and await lookup.record_of(key + "x") is None
    assert [r.id for r in admin.list()] == [record.id]
    assert admin.revoke(record.id) and not admin.revoke(record.id)
    assert await KeyLookup(REDIS_URL, prefix).record_of(key) is None
    _, admin_key = admin.create("ops", admin=True)
    assert (await lookup.record_of(admin_key)).admin and not record.admin
    with pytest.raises(ValueError, match="tenant"):
        admin.create("bad tenant!")
    await lookup.close()


async def test_two_tenants_with_one_conversation_id_never_see_each_other(make, prefix):
    admin = KeyAdmin(REDIS_URL, prefix)
    (_, acme), (_, globex) = admin.create("acme"), admin.create("globex")
    svc = make()
    tenancy = svc.services.tenancy
    tenancy.keys = KeyLookup(REDIS_URL, prefix)
    acme_caller, globex_caller = await tenancy.caller(f"Bearer {acme}"), await tenancy.caller(f"Bearer {globex}")
    assert (acme_caller.tenant, globex_caller.tenant) == ("acme", "globex")
    await svc.chat(request("Product is great!"), "shared-id", acme_caller)
    turn = await svc.chat_service.prepare(request("And now?"), "shared-id", globex_caller)
    assert turn.history == []
    assert len(await svc.store.load("acme", "shared-id")) == 2
    await tenancy.keys.close()


async def test_keys_optional_or_required(make, prefix):
    svc = make()
    tenancy = svc.services.tenancy
    tenancy.keys = KeyLookup(REDIS_URL, prefix)
    # OpenAI clients always send a bearer token; one that is not a Tierwise key means "no key".
    assert (await tenancy.caller("Bearer sk-placeholder")).tenant == svc.settings.http.tenant
    assert (await tenancy.caller(None)).tenant == svc.settings.http.tenant
    with pytest.raises(ApiError) as err:
        await tenancy.caller("Bearer tw-deadbeef-notakey")
    assert (err.value.status, err.value.code) == (401, "invalid_api_key")
    svc.settings.http.require_api_key = True
    with pytest.raises(ApiError) as err:
        await tenancy.caller("Bearer sk-placeholder")
    assert (err.value.status, err.value.code) == (401, "missing_api_key") and "tierwise keys create" in err.value.message
    await tenancy.keys.close()
