"""``GET /readyz``: whether the parts a request needs answer."""

from __future__ import annotations

import asyncio

from serve.api.errors import ApiError
from serve.api.serving_models import RETRY_AFTER_S, ServingModels
from serve.store import ConversationStore


class ServingHealth:
    """Readiness of one gateway replica: the store, the router and tier 1 must answer; tier 2 is reported."""

    def __init__(self, store: ConversationStore, router, tier1, models: ServingModels):
        self.store, self.router, self.tier1, self.models = store, router, tier1, models

    async def readiness(self) -> dict:
        """Which parts answer; raises a 503 naming the ones that do not."""
        checks = {"store": await self.store.ping()}
        for name, part in (("router", self.router), ("tier1", self.tier1)):
            try:
                await asyncio.wait_for(part.ready(), timeout=2.0)
                checks[name] = True
            except Exception:  # noqa: BLE001 - any failure means "not ready", and says which part
                checks[name] = False
        failing = [k for k, ok in checks.items() if not ok]
        if failing:
            raise ApiError(503, f"not ready: {', '.join(failing)}", "service_unavailable",
                           headers={"Retry-After": RETRY_AFTER_S})
        # Tier 2 is reported, not required: while a model's replicas restart, its traffic escalates.
        pool = self.models.tier2_pool
        tier2 = {"tier2": await pool.ready(), "tier2_unplaced": pool.unplaced} if pool else {}
        return {"status": "ready", "store_backend": self.store.backend,
                "tier3_configured": self.models.tier3_unconfigured is None, **checks, **tier2}
