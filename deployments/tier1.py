"""Tier-1 placement: inside the gateway replica (:class:`InProcessTier1`, the default: after routing,
tier 1 only runs small heads on the router's embedding, far cheaper than a hop) or as a pool of CPU
replicas (:class:`Tier1Pool`, reached through :class:`Tier1Handle`) batching with ``@serve.batch`` over
:meth:`models.tier1.Tier1Models.answer_batch`.
"""

from __future__ import annotations

import asyncio

from ray import serve

from models.tier1 import Tier1Answer, Tier1Models, Tier1Request


class InProcessTier1:
    """Tier 1 in the calling replica."""

    def __init__(self, models: Tier1Models):
        self.models = models

    async def answer(self, request: Tier1Request) -> Tier1Answer:
        """Answer one request; one that still needs an encoder pass runs it in a worker thread."""
        if request.needs_encoding:
            (answer,) = await asyncio.to_thread(self.models.answer_batch, [request])
        else:
            (answer,) = self.models.answer_batch([request])
        return answer

    async def ready(self) -> bool:
        """The models are loaded."""
        return True


@serve.deployment(name="Tier1Pool")
class Tier1Pool:
    """Sentiment, intent, entities, FAQ and rules on CPU replicas."""

    def __init__(self, settings):
        batching = settings.tier1.batching
        self.models = Tier1Models.from_settings(settings)
        self.answer.set_max_batch_size(batching.max_batch_size)
        self.answer.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    @serve.batch
    async def answer(self, requests: list[Tier1Request]) -> list[Tier1Answer]:
        """Answer one request; Serve gathers concurrent calls into ``requests``."""
        return await asyncio.to_thread(self.models.answer_batch, requests)

    async def ready(self) -> bool:
        """The models are loaded."""
        return True


class Tier1Handle:
    """The interface of :class:`InProcessTier1`, one handle hop away on :class:`Tier1Pool`."""

    def __init__(self, handle):
        self.handle = handle

    async def answer(self, request: Tier1Request) -> Tier1Answer:
        """Answer one request on the pool."""
        return await self.handle.answer.remote(request)

    async def ready(self) -> bool:
        """The pool answers."""
        return await self.handle.ready.remote()
