"""Tier-1 placement: in the gateway replica (:class:`Tier1Batcher`, the default: after routing, tier 1
only runs small heads on the router's embedding, not worth a hop) or as a pool of CPU replicas
(:class:`Tier1Pool`, reached through :class:`Tier1Handle`), each batching with ``@serve.batch`` over
:meth:`models.tier1.Tier1Models.answer_batch`.
"""

from __future__ import annotations

import asyncio

from ray import serve

from models.tier1 import Tier1Answer, Tier1Models, Tier1Request


class Tier1Batcher:
    """Gathers concurrent tier-1 calls of one replica into one :meth:`Tier1Models.answer_batch` call."""

    def __init__(self, models: Tier1Models, max_batch_size: int, batch_wait_timeout_s: float):
        self.models = models
        self.answer.set_max_batch_size(max_batch_size)
        self.answer.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch
    async def answer(self, requests: list[Tier1Request]) -> list[Tier1Answer]:
        """Answer one request; Serve gathers concurrent calls into ``requests``."""
        return await asyncio.to_thread(self.models.answer_batch, requests)

    async def ready(self) -> bool:
        """The models are loaded."""
        return True


@serve.deployment(name="Tier1Pool")
class Tier1Pool(Tier1Batcher):
    """Sentiment, intent, entities, FAQ and rules on CPU replicas."""

    def __init__(self, settings):
        batching = settings.tier1.batching
        super().__init__(Tier1Models.from_settings(settings), batching.max_batch_size, batching.batch_wait_timeout_s)


class Tier1Handle:
    """The same interface as :class:`Tier1Batcher`, one handle hop away."""

    def __init__(self, handle):
        self.handle = handle

    async def answer(self, request: Tier1Request) -> Tier1Answer:
        """Answer one request on the pool."""
        return await self.handle.answer.remote(request)

    async def ready(self) -> bool:
        """The pool answers."""
        return await self.handle.ready.remote()
