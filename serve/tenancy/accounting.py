"""What an answer cost, and where that is written down: token counts by the answering model's own tokenizer,
cost and baseline cost from the price table, the tenant's token and spend limits charged, the usage ledger
and the Prometheus counters."""

from __future__ import annotations

import asyncio
import logging
import time

from serve import metrics
from serve.api.protocol import TierwiseInfo
from serve.api.turns import Answer, Caller, Turn
from serve.store import StoreUnavailable
from serve.tenancy.ledger import UsageEntry
from serve.tenancy.pricing import PriceTable
from serve.tenancy.tokens import Tokenizers

log = logging.getLogger(__name__)

# Texts longer than this are counted in a worker thread: a long conversation takes milliseconds to tokenise,
# which on the event loop would stall every other request of the replica; a short one costs less than the hop.
INLINE_COUNT_CHARS = 4096


class Accounting:
    """Counts, prices and records answers for one gateway replica.

    ``limiter`` and ``ledger`` are the Redis (or in-process) ones of ``serve/tenancy/limits.py`` and
    ``serve/tenancy/ledger.py``, shared by every replica when in Redis.
    """

    def __init__(self, prices: PriceTable, tokenizers: Tokenizers, limiter, ledger):
        self.prices, self.tokenizers, self.limiter, self.ledger = prices, tokenizers, limiter, ledger

    # -- tokens -------------------------------------------------------------------------------------

    async def count(self, model: str, text: str) -> int:
        """Tokens of ``text`` by ``model``'s tokenizer."""
        if not text:
            return 0
        counter = self.tokenizers.for_model(model)
        if len(text) <= INLINE_COUNT_CHARS:
            return counter.count(text)
        return await asyncio.to_thread(counter.count, text)

    async def count_prompt(self, model: str, messages: list[dict]) -> int:
        """Prompt tokens of a conversation as ``model`` reads it, chat framing included."""
        counter = self.tokenizers.for_model(model)
        if sum(len(str(m.get("content") or "")) for m in messages) <= INLINE_COUNT_CHARS:
            return counter.count_messages(messages)
        return await asyncio.to_thread(counter.count_messages, messages)

    async def baseline_prompt(self, turn: Turn) -> int:
        """Prompt tokens the reference frontier model would have read for the turn's whole conversation
        (counted once per turn)."""
        if turn.baseline_prompt_tokens is None:
            turn.baseline_prompt_tokens = await self.count_prompt(self.prices.reference_model, turn.messages)
        return turn.baseline_prompt_tokens

    # -- cost ---------------------------------------------------------------------------------------

    def price(self, info: TierwiseInfo, answer: Answer) -> None:
        """Fill ``info``'s model, result, cost and baseline cost from ``answer``."""
        info.model = answer.model
        info.result = answer.result
        info.cost_usd = round(self.prices.cost(answer.price_model or answer.model, answer.prompt_tokens,
                                               answer.completion_tokens), 10)
        baseline_prompt = answer.baseline_prompt_tokens or answer.prompt_tokens
        info.baseline_cost_usd = round(self.prices.baseline(baseline_prompt, answer.completion_tokens), 10)

    async def settle(self, caller: Caller, info: TierwiseInfo, answer: Answer, request_id: str) -> None:
        """Charge the tenant's token and spend limits and write the ledger entry (once per request id).

        Called after the answer exists: a store outage here must not cost the client its answer, so it is
        logged and counted, not raised."""
        try:
            await self.limiter.charge(caller.tenant, caller.policy, answer.completion_tokens, info.cost_usd or 0.0)
            await self.ledger.record(UsageEntry(caller.tenant, info.tier, answer.model, answer.prompt_tokens,
                                                answer.completion_tokens, info.cost_usd or 0.0,
                                                info.baseline_cost_usd or 0.0, request_id))
        except StoreUnavailable as exc:
            log.error("usage of request %s (tenant %s, $%s) not recorded: %s", request_id, caller.tenant,
                      info.cost_usd, exc)

    @staticmethod
    def observe(info: TierwiseInfo, started: float, status: int = 200, answer: Answer | None = None) -> None:
        """Count the request, its latency, escalation, tokens, cost and baseline cost (``serve/metrics.py``)."""
        tier, model = str(info.tier), info.model
        metrics.REQUESTS.labels("chat", tier, model, info.task, str(status)).inc()
        metrics.LATENCY.labels("chat", tier, model).observe(time.perf_counter() - started)
        if info.escalated_from is not None:
            metrics.ESCALATIONS.labels(str(info.escalated_from), tier, info.escalation_cause or "").inc()
        if answer is not None:
            metrics.TOKENS.labels(tier, model, "prompt").inc(answer.prompt_tokens)
            metrics.TOKENS.labels(tier, model, "completion").inc(answer.completion_tokens)
        metrics.COST.labels(tier, model).inc(info.cost_usd or 0.0)
        metrics.BASELINE_COST.labels(tier).inc(info.baseline_cost_usd or 0.0)
