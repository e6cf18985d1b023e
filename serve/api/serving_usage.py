"""``GET /v1/usage``: a tenant's requests, tokens, cost, baseline cost and savings by tier, model and day,
from the usage ledger every gateway replica writes (``serve/tenancy/ledger.py``)."""

from __future__ import annotations

import datetime as dt

from serve.api.errors import ApiError
from serve.api.serving_models import RETRY_AFTER_S
from serve.api.turns import Caller
from serve.store import StoreUnavailable
from serve.tenancy.ledger import UsageReport

DEFAULT_DAYS = 30


class ServingUsage:
    """Usage reports: a tenant's key sees its own tenant; an admin key any tenant's, or all together."""

    def __init__(self, ledger):
        self.ledger = ledger

    async def usage(self, caller: Caller, tenant: str | None, start: dt.date | None,
                    end: dt.date | None) -> UsageReport:
        """The report for ``tenant`` (default: the caller's; every tenant's is ``tenant=*``, admin keys only)
        over UTC days ``start``..``end`` inclusive (default: the last 30 days)."""
        if tenant is None:
            tenant = caller.tenant
        if tenant != caller.tenant and not caller.admin:
            raise ApiError(403, f"tenant={tenant}: a key of tenant {caller.tenant} may read only its own usage; "
                                f"other tenants' usage needs an admin key (`tierwise keys create --admin`)",
                           "permission_error", param="tenant", code="not_admin")
        end = end or dt.datetime.now(dt.UTC).date()
        start = start or end - dt.timedelta(days=DEFAULT_DAYS - 1)
        try:
            return await self.ledger.report(None if tenant == "*" else tenant, start, end)
        except ValueError as exc:
            raise ApiError(400, f"start/end: {exc}", param="start", code="invalid_value") from exc
        except StoreUnavailable as exc:
            raise ApiError(503, "the usage ledger is unavailable; retry later", "service_unavailable",
                           headers={"Retry-After": RETRY_AFTER_S}) from exc
