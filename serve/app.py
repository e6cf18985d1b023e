"""The Tierwise Ray Serve application: builder, gateway deployment and wiring of the tiers.

``build_app(settings)`` returns an :class:`~ray.serve.Application` (as Ray Serve LLM's builders do), so
``tierwise serve``, tests and ``serve run serve.app:app_builder`` all deploy the same graph.
"""

from __future__ import annotations

import functools
import logging

import ray
from ray import serve
from ray.serve import Application

from deployments.router import InProcessRouter, RouterDeployment, RouterHandle
from deployments.tier1 import InProcessTier1, Tier1Handle, Tier1Pool
from deployments.tier2 import build_tier2
from deployments.tier3 import Tier3Forwarder
from models.encoder import cuda_available
from models.router import Router
from models.tier1 import Tier1Models
from serve.api.routes import app as fastapi_app
from serve.api.routes import bind_services
from serve.services import build_services, tokenizers_for
from serve.settings import Settings, load_settings
from serve.store import open_store
from serve.tenancy.auth import KeyLookup
from serve.tenancy.ledger import MemoryLedger, RedisLedger
from serve.tenancy.limits import MemoryLimiter, RedisLimiter
from serve.tiers.tier2_client import Tier2Pool
from serve.tiers.tier3_client import Tier3Client

log = logging.getLogger(__name__)


@serve.deployment(name="Gateway")
@serve.ingress(fastapi_app)
class Gateway:
    """OpenAI-compatible ingress; all logic lives in the services of ``serve/services.py``.

    ``router`` and ``tier1`` are deployment handles, or None to run that part inside this replica.
    """

    async def __init__(self, settings: Settings, router, tier1, tier3, tier2: dict | None = None,
                       tier2_unplaced: dict[str, str] | None = None):
        store = await open_store(settings.store.backend, settings.store.url, settings.store.prefix,
                                 settings.store.ttl_s, settings.store.max_messages)
        log.info("conversation store: %s", store.backend)
        unconfigured = await tier3.unconfigured_reason.remote()
        if unconfigured:
            log.warning("tier 3 is not configured: %s", unconfigured)
        router_model = Router.from_settings(settings) if router is None else None
        router = InProcessRouter(router_model) if router_model else RouterHandle(router)
        if tier1 is None:
            # Sharing the router's encoder and FAQ index: one model in memory, and one pass per request.
            shared = (router_model.encoder, router_model.faq) if router_model else (None, None)
            tier1 = InProcessTier1(Tier1Models.from_settings(settings, *shared))
        else:
            tier1 = Tier1Handle(tier1)
        for model, why in (tier2_unplaced or {}).items():
            log.warning("tier-2 model %s cannot be placed: %s; its traffic goes to the next tier", model, why)
        pool = Tier2Pool(settings.tier2, tier2 or {}, tier2_unplaced or {}) if settings.tier2.models else None
        # Keys, limits and the ledger live beside the conversations, in Redis, shared by every replica; an
        # in-process store has no keys to check and keeps limits and usage per replica.
        if store.backend == "redis":
            keys = KeyLookup(settings.store.url, settings.store.prefix)
            limiter = RedisLimiter(settings.store.url, settings.store.prefix)
            ledger = RedisLedger(settings.store.url, settings.store.prefix, settings.usage.retention_days)
        else:
            keys, limiter, ledger = None, MemoryLimiter(), MemoryLedger(settings.usage.retention_days)
            log.warning("store is in-process: tenant limits and the usage ledger are this replica's alone")
        if settings.http.require_api_key and keys is None:
            log.warning("http.require_api_key is set but the store is not Redis: every request will be refused")
        bind_services(build_services(settings, router=router, tier1=tier1, tier3=tier3, tier3_unconfigured=unconfigured,
                                     store=store, prices=settings.pricing.table(), limiter=limiter,
                                     ledger=ledger, tokenizers=tokenizers_for(settings), tier2=pool,
                                     keys=keys))


def router_uses_gpu(settings: Settings) -> bool:
    """Whether the router should ask Ray for a GPU (``router.gpu``: auto, never, always).

    ``auto`` takes one only when the cluster has a GPU and ONNX Runtime here can use it; a GPU cluster
    with the CPU build keeps the router on the CPU, and says so.
    """
    if settings.router.gpu == "auto":
        if cluster_resources().get("GPU", 0) <= 0:
            return False
        if not cuda_available():
            log.warning("the cluster has GPUs but this onnxruntime build has no CUDAExecutionProvider: the "
                        "router stays on the CPU (install the gpu extra, onnxruntime-gpu, to use them)")
            return False
        return True
    return settings.router.gpu == "always"


def cluster_resources() -> dict[str, float]:
    """The Ray cluster's total resources ({} before Ray starts: nothing that needs a GPU is placed)."""
    return ray.cluster_resources() if ray.is_initialized() else {}


def build_app(settings: Settings) -> Application:
    """The whole graph: gateway → router, tier 1 (each in the gateway or as deployments), the tier-2
    LLM deployments the cluster can place, and the tier-3 forwarder."""
    use_gpu = router_uses_gpu(settings)
    placement = settings.router.placement
    router = None
    if placement == "deployment" or (placement == "auto" and use_gpu):
        batching = settings.router.gpu_batching if use_gpu else settings.router.batching
        actor = {"num_cpus": batching.num_cpus, **({"num_gpus": 1} if use_gpu else {})}
        router = RouterDeployment.options(num_replicas=batching.num_replicas, ray_actor_options=actor,
                                          max_ongoing_requests=max(2 * batching.max_batch_size, 16)
                                          ).bind(settings, use_gpu)
    tier1 = None
    if settings.tier1.placement == "deployment":
        b = settings.tier1.batching
        tier1 = Tier1Pool.options(num_replicas=b.num_replicas, ray_actor_options={"num_cpus": b.num_cpus},
                                  max_ongoing_requests=max(2 * b.max_batch_size, 16)).bind(settings)
    gateway = Gateway.options(ray_actor_options={"num_cpus": settings.http.num_cpus},
                              **settings.http.capacity.options())
    tier3 = Tier3Forwarder.options(**settings.tier3.capacity.options()).bind(
        functools.partial(Tier3Client, settings.tier3.providers))
    tier2, unplaced = build_tier2(settings.tier2, cluster_resources()) if settings.tier2.models else ({}, {})
    return gateway.bind(settings, router, tier1, tier3, tier2, unplaced)


def app_builder(args: dict) -> Application:
    """Entry for ``serve run serve.app:app_builder config=PATH`` and Serve config files."""
    return build_app(load_settings(args.get("config")))
