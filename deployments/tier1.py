"""Tier-1 pool: CPU replicas with ``@serve.batch`` over :meth:`models.tier1.Tier1Models.answer_batch`."""

from __future__ import annotations

from ray import serve

from models.tier1 import Tier1Answer, Tier1Models, Tier1Request


@serve.deployment(name="Tier1Pool")
class Tier1Pool:
    """Sentiment, intent, entities, FAQ and rules on CPU."""

    def __init__(self, settings):
        self.models = Tier1Models.from_settings(settings)
        self.answer.set_max_batch_size(settings.tier1.batching.max_batch_size)
        self.answer.set_batch_wait_timeout_s(settings.tier1.batching.batch_wait_timeout_s)

    @serve.batch
    async def answer(self, requests: list[Tier1Request]) -> list[Tier1Answer]:
        """Answer one request; Serve gathers concurrent calls into ``requests``."""
        return self.models.answer_batch(requests)

    def ready(self) -> bool:
        """Models are loaded (the constructor has returned)."""
        return True
