"""Router deployment: ``@serve.batch`` over :meth:`models.router.Router.route_batch`.

On a cluster with a GPU it asks Ray for one and runs the encoder on the CUDA execution provider with
larger batches; otherwise it runs the int8 model on CPU.
"""

from __future__ import annotations

from ray import serve

from models.router import RouteDecision, RouteInput, Router


@serve.deployment(name="Router")
class RouterDeployment:
    """Batches concurrent route calls into one encoder pass."""

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
        return self.router.route_batch(inputs)

    def providers(self) -> list[str]:
        """ONNX Runtime execution providers in use (readiness and diagnostics)."""
        return self.router.encoder.providers
