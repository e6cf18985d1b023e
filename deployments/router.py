"""Router placement: in the gateway replica (:class:`RouterBatcher`, no handle hop: the CPU default) or
as its own deployment (:class:`RouterDeployment`, reached through :class:`RouterHandle`: on a GPU node,
where it asks Ray for the GPU and runs the encoder on CUDA with larger batches).

Both batch with ``@serve.batch`` over :meth:`models.router.Router.route_batch`.
"""

from __future__ import annotations

import asyncio

from ray import serve

from models.router import RouteDecision, RouteInput, Router


class RouterBatcher:
    """Gathers concurrent route calls of one replica into one :meth:`Router.route_batch` call."""

    def __init__(self, router: Router, max_batch_size: int, batch_wait_timeout_s: float):
        self.router = router
        self.route.set_max_batch_size(max_batch_size)
        self.route.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch
    async def route(self, inputs: list[RouteInput]) -> list[RouteDecision]:
        """Route one request; Serve gathers concurrent calls into ``inputs``."""
        # In a thread, so the replica keeps taking requests (the next batch) while the encoder runs.
        return await asyncio.to_thread(self.router.route_batch, inputs)

    async def ready(self) -> list[str]:
        """The ONNX Runtime execution providers in use (readiness and diagnostics)."""
        return self.router.encoder.providers


@serve.deployment(name="Router")
class RouterDeployment(RouterBatcher):
    """The router as its own deployment, batched per replica."""

    def __init__(self, settings, use_gpu: bool = False):
        if use_gpu:
            settings = settings.model_copy(deep=True)
            settings.encoder.device = "cuda"
        batching = settings.router.gpu_batching if use_gpu else settings.router.batching
        super().__init__(Router.from_settings(settings), batching.max_batch_size, batching.batch_wait_timeout_s)


class RouterHandle:
    """The same interface as :class:`RouterBatcher`, one handle hop away."""

    def __init__(self, handle):
        self.handle = handle

    async def route(self, item: RouteInput) -> RouteDecision:
        """Route one request on the Router deployment."""
        return await self.handle.route.remote(item)

    async def ready(self) -> list[str]:
        """The deployment's execution providers."""
        return await self.handle.ready.remote()
