"""``GET /v1/models`` and the catalogue behind every route: which tiers and models this gateway can answer
with, and the tier a model name pins a request to."""

from __future__ import annotations

from serve.api.errors import ApiError
from serve.api.protocol import ModelCard, ModelList
from serve.settings import Settings
from serve.tiers.tier2_client import Tier2Pool

ROUTER_ALIASES = ("auto", "tierwise-auto")
RETRY_AFTER_S = "5"


class ServingModels:
    """What is deployed: tier 1's model, the tier-2 models the cluster placed, the tier-3 providers' models.

    ``tier3_unconfigured`` (why tier 3 cannot answer, or None) is asked of the forwarder once at start-up.
    """

    def __init__(self, settings: Settings, tier2: Tier2Pool | None, tier3_unconfigured: str | None):
        self.tier1_model = settings.tier1.model_name
        self.tier2_pool = tier2
        self.tier2_models = [t.served_id for t in tier2.targets] if tier2 else []
        self.tier3_models = [p.model for p in settings.tier3.providers]
        self.tier3_unconfigured = tier3_unconfigured
        self.available = {1, 3} | ({2} if self.tier2_models else set())
        unplaced = tier2.unplaced if tier2 else {}
        # Why tier 2 is missing when it was configured but nothing could be placed, for the reason field.
        self.absent: dict[int, str] = {}
        if unplaced and not self.tier2_models:
            self.absent[2] = "tier 2 not deployed: " + "; ".join(f"{m} cannot be placed ({why})"
                                                                  for m, why in unplaced.items())

    def list_models(self) -> ModelList:
        """The router aliases and the concrete models a client may ask for."""
        cards = [ModelCard(id=a) for a in ROUTER_ALIASES] + [ModelCard(id=self.tier1_model, tier=1)]
        cards += [ModelCard(id=m, tier=2, owned_by="tier2-vllm") for m in self.tier2_models]
        cards += [ModelCard(id=m, tier=3, owned_by="tier3-provider") for m in self.tier3_models]
        return ModelList(data=cards)

    def forced_tier(self, model: str) -> int | None:
        """None for a router alias, else the tier of a concrete model; 404 for an unknown one."""
        if model in ROUTER_ALIASES:
            return None
        if model == self.tier1_model:
            return 1
        if model in self.tier2_models:
            return 2
        if model in self.tier3_models:
            return 3
        unplaced = self.tier2_pool.unplaced if self.tier2_pool else {}
        if model in unplaced:
            raise ApiError(503, f"model {model!r} is configured but cannot be placed on this cluster: "
                                f"{unplaced[model]}; ask for model 'auto'", "service_unavailable", param="model",
                           code="model_not_placed", headers={"Retry-After": RETRY_AFTER_S})
        known = ", ".join([*ROUTER_ALIASES, self.tier1_model, *self.tier2_models, *self.tier3_models])
        raise ApiError(404, f"model {model!r} does not exist; available: {known}", param="model",
                       code="model_not_found")

    def model_of(self, tier: int) -> str:
        """The model a tier answers with (the first provider's for tier 3, until the provider says)."""
        if tier == 1:
            return self.tier1_model
        if tier == 2:
            return self.tier2_models[0]
        return self.tier3_models[0] if self.tier3_models else "unconfigured"

    def can_answer(self, tier: int, available: set[int] | None = None) -> bool:
        """Whether ``tier`` is deployed (and among ``available``, a request's allowed tiers, when given) and
        able to answer (tier 3 needs a configured provider)."""
        allowed = self.available if available is None else available
        return tier in allowed and (tier != 3 or self.tier3_unconfigured is None)
