"""Who is calling, and whether they may: API keys to tenants, tenants to policies, and the tenant's rate
limits and daily budget checked before any paid call."""

from __future__ import annotations

import math

from serve.api.errors import ApiError
from serve.api.turns import Caller
from serve.settings import Settings
from serve.store import StoreUnavailable
from serve.tenancy.auth import KEY_PREFIX, KeyLookup
from serve.tenancy.limits import LimitExceeded

RETRY_AFTER_S = "5"
# The error code a client sees per limit, as OpenAI names its own: rate limits are rate_limit_exceeded,
# a spent budget is insufficient_quota.
LIMIT_CODES = {"requests_per_minute": "rate_limit_exceeded", "tokens_per_minute": "rate_limit_exceeded",
               "spend_per_day_usd": "insufficient_quota"}


class Tenancy:
    """Resolves callers and admits their requests; ``keys`` is None when the store is not Redis."""

    def __init__(self, settings: Settings, keys: KeyLookup | None, limiter):
        self.settings, self.keys, self.limiter = settings, keys, limiter

    async def caller(self, authorization: str | None) -> Caller:
        """The caller, from ``Authorization: Bearer <key>``.

        A Tierwise key (``tw-...``) must be known; without one the caller is ``http.tenant``, unless
        ``http.require_api_key`` is set. A bearer token that is not a Tierwise key is ignored when keys are
        optional: OpenAI clients always send one, often a placeholder."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        required = self.settings.http.require_api_key
        if not key.startswith(KEY_PREFIX):
            if required:
                raise ApiError(401, "an API key is required: send Authorization: Bearer <key> (create one with "
                                    "`tierwise keys create --tenant NAME`)", "invalid_request_error",
                               code="missing_api_key")
            return self._caller(self.settings.http.tenant)
        if self.keys is None:
            raise ApiError(401, "API keys are checked in Redis, which this gateway does not use (store.backend)",
                           "invalid_request_error", code="invalid_api_key")
        try:
            record = await self.keys.record_of(key)
        except StoreUnavailable as exc:
            raise ApiError(503, "the key store is unavailable; retry later", "service_unavailable",
                           headers={"Retry-After": RETRY_AFTER_S}) from exc
        if record is None:
            raise ApiError(401, "invalid or revoked API key", "invalid_request_error", code="invalid_api_key")
        return self._caller(record.tenant, record.admin)

    def _caller(self, tenant: str, admin: bool = False) -> Caller:
        return Caller(tenant, self.settings.tenants.policy(tenant), admin)

    async def admit(self, caller: Caller, prompt_tokens: int) -> None:
        """Let the request through the tenant's limits (atomically across replicas), or refuse it with a 429
        that names the limit and says when to retry."""
        try:
            await self.limiter.admit(caller.tenant, caller.policy, prompt_tokens)
        except LimitExceeded as exc:
            raise ApiError(429, f"tenant {caller.tenant}: {exc}", "rate_limit_error" if exc.limit != "spend_per_day_usd"
                           else "insufficient_quota", param=exc.limit, code=LIMIT_CODES[exc.limit],
                           headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}) from exc
        except StoreUnavailable as exc:
            raise ApiError(503, "the limits store is unavailable, so this tenant's limits cannot be checked; retry "
                                "later", "service_unavailable", headers={"Retry-After": RETRY_AFTER_S}) from exc
