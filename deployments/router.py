"""Router placement: inside the gateway replica (:class:`InProcessRouter`, the CPU default: no handle
hop) or as its own deployment (:class:`RouterDeployment`, reached through :class:`RouterHandle`: on a
GPU node it asks Ray for the GPU and batches requests on the CUDA encoder with ``@serve.batch``).

Measured on the 2-core CPU machine (loadtests/bench_latency.py and the figures in the README): a handle
hop costs 5-8 ms and a ``@serve.batch`` queue ~1.7 ms, against ~4.5 ms for the decision itself.
"""

from __future__ import annotations

import asyncio

from ray import serve

from models.entities import Entity
from models.router import RouteDecision, RouteInput, Router


class InProcessRouter:
    """The router in the calling replica, without a batching queue.

    On CPU the encoder runs each text alone (see :meth:`models.encoder.Encoder.encode`), so a queue
    would add latency and no throughput. The pass runs in a worker thread so the replica keeps serving
    other requests meanwhile (ONNX Runtime releases the GIL).
    """

    def __init__(self, router: Router):
        self.router = router

    async def route(self, item: RouteInput) -> RouteDecision:
        """Route one request."""
        (decision,) = await asyncio.to_thread(self.router.route_batch, [item])
        return decision

    async def pii_entities(self, texts: list[str]) -> list[list[Entity]]:
        """The person names in each of ``texts``, over the whole of each (:meth:`Router.pii_entities`)."""
        return await asyncio.to_thread(self.router.pii_entities, texts)

    async def ready(self) -> list[str]:
        """The ONNX Runtime execution providers in use (readiness and diagnostics)."""
        return self.router.encoder.providers


@serve.deployment(name="Router")
class RouterDeployment:
    """The router as its own deployment: concurrent calls of a replica share one batched pass."""

    def __init__(self, settings, use_gpu: bool = False):
        if use_gpu:
            settings = settings.model_copy(deep=True)
            settings.encoder.device = "cuda"
        batching = settings.router.gpu_batching if use_gpu else settings.router.batching
        self.router = Router.from_settings(settings)
        self.route.set_max_batch_size(batching.max_batch_size)
        self.route.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    @serve.batch
    async def route(self, inputs: list[RouteInput]) -> list[RouteDecision]:
        """Route one request; Serve gathers concurrent calls into ``inputs``."""
        # In a thread, so the replica keeps queueing the next batch while the encoder runs.
        return await asyncio.to_thread(self.router.route_batch, inputs)

    async def pii_entities(self, texts: list[str]) -> list[list[Entity]]:
        """The person names in each of ``texts`` (:meth:`Router.pii_entities`); the texts of one request
        already share one encoder pass, so there is no batching queue."""
        return await asyncio.to_thread(self.router.pii_entities, texts)

    async def ready(self) -> list[str]:
        """The ONNX Runtime execution providers in use."""
        return self.router.encoder.providers


class RouterHandle:
    """The interface of :class:`InProcessRouter`, one handle hop away on :class:`RouterDeployment`."""

    def __init__(self, handle):
        self.handle = handle

    async def route(self, item: RouteInput) -> RouteDecision:
        """Route one request on the Router deployment."""
        return await self.handle.route.remote(item)

    async def pii_entities(self, texts: list[str]) -> list[list[Entity]]:
        """The person names in each of ``texts``, tagged on the Router deployment."""
        return await self.handle.pii_entities.remote(texts)

    async def ready(self) -> list[str]:
        """The deployment's execution providers."""
        return await self.handle.ready.remote()
