"""Tier 3's Ray Serve deployment: a thin wrapper over the gateway's tier-3 client
(:class:`serve.tiers.tier3_client.Tier3Client`), so that the provider connections, retries and circuit
breakers of every gateway replica are shared by the forwarder's replicas.

The client is injected as a factory (as Ray Serve LLM's ``LLMServer`` takes its engine class): the
deployment knows how to host a client, not how to reach a provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from ray import serve


class Tier3Backend(Protocol):
    """What the forwarder hosts: a client of the frontier providers."""

    def unconfigured_reason(self) -> str | None: ...

    async def complete(self, messages: list[dict], params: dict, prefer: str | None = None) -> Any: ...

    def stream(self, messages: list[dict], params: dict, prefer: str | None = None) -> AsyncIterator[dict]: ...


@serve.deployment(name="Tier3Forwarder", ray_actor_options={"num_cpus": 0})
class Tier3Forwarder:
    """Ray Serve deployment exposing the client ``client_factory`` builds in each replica."""

    def __init__(self, client_factory: Callable[[], Tier3Backend]):
        self._client = client_factory()

    def unconfigured_reason(self) -> str | None:
        """Why the client cannot answer (no provider configured), or None."""
        return self._client.unconfigured_reason()

    async def complete(self, messages: list[dict], params: dict, prefer: str | None = None) -> Any:
        """One whole completion from the first provider that answers."""
        return await self._client.complete(messages, params, prefer)

    async def stream(self, messages: list[dict], params: dict, prefer: str | None = None) -> AsyncIterator[dict]:
        """A streamed completion's chunks; call through ``handle.options(stream=True)``."""
        async for item in self._client.stream(messages, params, prefer):
            yield item
