"""The gateway's services for one replica, built from its parts: what the FastAPI routes call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serve.api.serving_chat import ServingChat
from serve.api.serving_health import ServingHealth
from serve.api.serving_models import ServingModels
from serve.api.serving_tasks import ServingTasks
from serve.api.serving_usage import ServingUsage
from serve.settings import Settings
from serve.store import ConversationStore
from serve.tenancy.accounting import Accounting
from serve.tenancy.admission import Tenancy
from serve.tenancy.auth import KeyLookup
from serve.tenancy.pii import PiiScanner
from serve.tenancy.pricing import PriceTable
from serve.tenancy.tokens import Tokenizers
from serve.tiers.tier1 import Tier1Service
from serve.tiers.tier2 import Tier2Service
from serve.tiers.tier2_client import Tier2Pool
from serve.tiers.tier3 import Tier3Service


@dataclass
class GatewayServices:
    """One per API surface, as vLLM's OpenAI server has a serving class per surface."""

    settings: Settings
    models: ServingModels
    tenancy: Tenancy
    chat: ServingChat
    tasks: ServingTasks
    usage: ServingUsage
    health: ServingHealth


def tokenizers_for(settings: Settings) -> Tokenizers:
    """Token counters for every model the gateway prices: tier 1 counts the encoder's word pieces (what it
    reads), a tier-2 model served from a local directory its own tokenizer, everything else its family's
    (``tokens.overrides`` first); the reference and tier-3 models' are loaded now, not on a request."""
    local = {}
    for m in settings.tier2.models:
        # A source may also be remote storage ({bucket_uri: ...}), whose tokenizer is not on this machine.
        source = m.llm_config["model_loading_config"].get("model_source")
        if isinstance(source, str) and Path(source).is_dir():
            local[m.name] = source
    tokenizers = Tokenizers({settings.tier1.model_name: settings.encoder.model_dir} | local
                            | settings.tokens.overrides)
    tokenizers.warm([settings.pricing.table().reference_model,
                     *(p.model for p in settings.tier3.providers)])
    return tokenizers


def build_local_services(settings: Settings, router_model, tier1_models, tier3_unconfigured: str) -> GatewayServices:
    """Services on models loaded in this process and in-process state, with no tier above tier 1: what the
    tier-1 evaluation and the tests drive the API with (no Ray, no Redis)."""
    from deployments.router import InProcessRouter
    from deployments.tier1 import InProcessTier1
    from serve.store import MemoryConversationStore
    from serve.tenancy.ledger import MemoryLedger
    from serve.tenancy.limits import MemoryLimiter

    return build_services(settings, router=InProcessRouter(router_model), tier1=InProcessTier1(tier1_models),
                          tier3=None, tier3_unconfigured=tier3_unconfigured, store=MemoryConversationStore(),
                          prices=settings.pricing.table(), limiter=MemoryLimiter(),
                          ledger=MemoryLedger(settings.usage.retention_days), tokenizers=tokenizers_for(settings))


def build_services(settings: Settings, *, router, tier1, tier3, tier3_unconfigured: str | None,
                   store: ConversationStore, prices: PriceTable, limiter, ledger, tokenizers: Tokenizers,
                   tier2: Tier2Pool | None = None, keys: KeyLookup | None = None) -> GatewayServices:
    """Wire the services over their dependencies: ``router`` and ``tier1`` are in-process batchers or handles,
    ``tier3`` the forwarder's handle, ``tier2`` the pool of tier-2 handles (None: not deployed), ``limiter`` and
    ``ledger`` the Redis or in-process ones (``serve/tenancy/limits.py``, ``serve/tenancy/ledger.py``)."""
    models = ServingModels(settings, tier2, tier3_unconfigured)
    tenancy = Tenancy(settings, keys, limiter)
    accounting = Accounting(prices, tokenizers, limiter, ledger)
    chat = ServingChat(settings, models, tenancy, accounting, store, router, tier1,
                       Tier1Service(models, accounting, settings.tier1.when_unsure),
                       Tier2Service(settings.tier2, tier2, store) if tier2 else None,
                       Tier3Service(tier3, models, accounting), PiiScanner(router))
    return GatewayServices(settings, models, tenancy, chat,
                           ServingTasks(tier1, models.tier1_model, settings.http.max_message_chars),
                           ServingUsage(ledger), ServingHealth(store, router, tier1, models))
