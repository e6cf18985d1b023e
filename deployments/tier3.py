"""Tier 3's Ray Serve deployment: a thin wrapper over :class:`serve.tiers.tier3_client.Tier3Client`, so that the
provider connections, retries and circuit breakers of every gateway replica are shared by the forwarder's."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ray import serve

from serve.settings import ProviderSettings
from serve.tiers.tier3_client import Completion, Tier3Client


@serve.deployment(name="Tier3Forwarder", ray_actor_options={"num_cpus": 0})
class Tier3Forwarder:
    """Ray Serve deployment exposing a Tier3Client."""

    def __init__(self, providers: list[ProviderSettings], breaker_threshold: int = 5,
                 breaker_cooldown_s: float = 30.0):
        self._client = Tier3Client(
            list(providers),
            breaker_threshold=breaker_threshold,
            breaker_cooldown_s=breaker_cooldown_s,
        )

    def unconfigured_reason(self) -> str | None:
        """See Tier3Client.unconfigured_reason."""
        return self._client.unconfigured_reason()

    async def complete(self, messages: list[dict], params: dict, prefer: str | None = None) -> Completion:
        """See Tier3Client.complete."""
        return await self._client.complete(messages, params, prefer)

    async def stream(self, messages: list[dict], params: dict, prefer: str | None = None) -> AsyncIterator[dict]:
        """See Tier3Client.stream; call through `handle.options(stream=True)`."""
        async for item in self._client.stream(messages, params, prefer):
            yield item
