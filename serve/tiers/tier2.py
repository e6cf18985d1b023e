"""The gateway's tier-2 logic: pick a model, fit the conversation to its window, call it, and judge the
answer before the client sees any of it.

:class:`Tier2Service` raises :class:`~deployments.tier2.Tier2Failure` whenever tier 2 should hand the
request on (no model fits the task or the prompt, the engine failed, timed out or is overloaded, or the
answer is unsure while a higher tier could answer); :class:`~serve.api.serving_chat.ServingChat` decides what
that costs the request: an escalation, or an error for a client that pinned the model.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from serve.api.errors import ApiError
from serve.settings import Tier2Settings
from serve.store import ConversationStore, StoreUnavailable
from serve.tiers.context import Fitted, chunks_within, fit_to_window, summary_message, transcript
from serve.tiers.policy import rank_tier2
from serve.tiers.tier2_client import (
    SUMMARY_INSTRUCTION,
    EventPump,
    Tier2Answer,
    Tier2Failure,
    Tier2Pool,
    Tier2Target,
    answer_confidence,
    hold_back,
)

log = logging.getLogger(__name__)

# Bytes of instruction and framing a summarisation prompt adds around the transcript (a bound).
SUMMARY_PROMPT_OVERHEAD = 400
# Low, for faithful summaries; not 0, where a weak model repeats one token.
SUMMARY_TEMPERATURE = 0.3


@dataclass
class Tier2Outcome:
    """Tier 2's answer: whole (``answer``), or a stream (``pieces``: text, then the finished answer)."""

    target: Tier2Target
    fitted: Fitted
    confidence: float
    low_confidence: bool = False
    answer: Tier2Answer | None = None
    pieces: AsyncIterator | None = None


class Tier2Service:
    """Tier 2 for one gateway replica, over the pool of deployment handles."""

    def __init__(self, settings: Tier2Settings, pool: Tier2Pool, store: ConversationStore):
        self.settings, self.pool, self.store = settings, pool, store

    def targets(self, task: str, requested_tokens: int | None, pinned: str | None, previous: str | None,
                quality: Callable[[Tier2Target], float | None] = lambda target: None,
                threshold: float = 0.0) -> tuple[list[Tier2Target], str]:
        """Targets to try, best first, and why; a pinned model is the only one (a 400 when it cannot take
        ``requested_tokens`` of output). ``quality`` and ``threshold``: see :func:`serve.tiers.policy.rank_tier2`."""
        if pinned:
            target = self.pool.target(pinned)
            if requested_tokens and requested_tokens > target.model.output_limit:
                raise ApiError(400, f"max_tokens: {requested_tokens} exceeds the output limit of model {pinned!r} "
                                    f"({target.model.output_limit} tokens)", param="max_tokens",
                               code="max_tokens_too_large")
            return [target], f"model chosen by the client ({pinned})"
        ranked, reason = rank_tier2(self.pool.targets, task, self.pool.load, previous, quality, threshold)
        if not ranked:
            raise Tier2Failure("no_fit", reason)
        able = [t for t in ranked if not requested_tokens or requested_tokens <= t.model.output_limit]
        if not able:
            limits = ", ".join(f"{t.served_id} {t.model.output_limit}" for t in ranked)
            raise Tier2Failure("too_long", f"max_tokens {requested_tokens} exceeds every tier-2 model's output "
                                           f"limit ({limits})")
        if able[0] is not ranked[0]:
            reason += f"; {able[0].served_id} instead, the first whose output limit takes max_tokens {requested_tokens}"
        return able, reason

    async def fit(self, targets: list[Tier2Target], messages: list[dict], requested_tokens: int | None,
                  conversation: tuple[str, str] | None) -> tuple[Tier2Target, Fitted, str]:
        """The first target whose window takes the conversation (fitted with a summary where needed);
        ``conversation`` is its (tenant, id) when it is stored, where summaries are kept."""
        misses = []
        for target in targets:
            window = target.model.context_window
            reserve = requested_tokens or min(self.settings.default_output_reserve, window // 2)
            fitted = await fit_to_window(messages, window - reserve, lambda m, t=target: self.pool.count_tokens(t, m),
                                         lambda older, t=target: self._summary(t, older, conversation),
                                         self.settings.summary_max_tokens)
            if fitted is not None:
                note = f"; {fitted.summarised} older messages summarised to fit its {window}-token window" \
                    if fitted.summarised else ""
                skipped = f"; skipped {', '.join(misses)}" if misses else ""
                return target, fitted, note + skipped
            misses.append(f"{target.served_id} (window {window} tokens with {reserve} for the answer)")
        raise Tier2Failure("too_long", f"the conversation does not fit any tier-2 window: {', '.join(misses)}")

    async def _summary(self, target: Tier2Target, older: list[dict], conversation: tuple[str, str] | None) -> str:
        """The summary of ``older`` (the conversation's first messages after the system prompt): the stored
        one when there is one for exactly these, else made on tier 2 from the longest stored one before it."""
        stored = await self._stored_summaries(conversation)
        n = len(older)
        if n in stored:
            return stored[n]
        start = max((k for k in stored if k < n), default=0)
        text = await self._summarise(target, stored.get(start), older[start:])
        if conversation is not None:
            try:
                await self.store.save_summary(*conversation, n, text)
            except StoreUnavailable as exc:
                log.warning("summary of conversation %s not kept: %s", conversation[1], exc)
        return text

    async def _stored_summaries(self, conversation: tuple[str, str] | None) -> dict[int, str]:
        if conversation is None:
            return {}
        try:
            return await self.store.load_summaries(*conversation)
        except StoreUnavailable as exc:
            log.warning("stored summaries of conversation %s unreadable: %s", conversation[1], exc)
            return {}

    async def _summarise(self, target: Tier2Target, previous: str | None, messages: list[dict]) -> str:
        """Fold ``messages`` into ``previous`` on the base model, a window-sized run of messages at a time."""
        base = Tier2Target(target.model)
        limit = self.settings.summary_max_tokens
        run_bytes = target.model.context_window - 2 * limit - SUMMARY_PROMPT_OVERHEAD
        if run_bytes < 64:
            raise Tier2Failure("too_long", f"{base.served_id}'s window ({target.model.context_window} tokens) is too "
                                           f"small to summarise in (tier2.summary_max_tokens={limit})")
        summary = previous
        for run in chunks_within(messages, run_bytes):
            text = transcript(run)
            if summary:
                text = f"{summary_message(summary)['content']}\n\nThe conversation continues:\n{text}"
            prompt = [{"role": "system", "content": SUMMARY_INSTRUCTION.format(words=int(limit * 0.7))},
                      {"role": "user", "content": text}]
            # min_tokens: a model that ends its turn at once would otherwise leave the thread with nothing.
            answer = await self.pool.complete(base, prompt, {"max_tokens": limit, "min_tokens": min(16, limit),
                                                             "temperature": SUMMARY_TEMPERATURE})
            summary = answer.content.strip() or summary
        # A model that wrote nothing usable still leaves the thread: the older turns' openings, cut to the
        # summary's budget (a byte-level tokenizer makes no more tokens than bytes).
        return summary or transcript(messages).encode()[:limit].decode(errors="ignore")

    async def complete(self, target: Tier2Target, fitted: Fitted, params: dict, may_escalate: bool) -> Tier2Outcome:
        """A whole answer; an unsure one raises low_confidence when ``may_escalate``."""
        answer = await self.pool.complete(target, fitted.messages, params)
        low = self._judge(target, answer.confidence, may_escalate)
        return Tier2Outcome(target, fitted, answer.confidence, low, answer=answer)

    async def stream(self, target: Tier2Target, fitted: Fitted, params: dict, may_escalate: bool) -> Tier2Outcome:
        """A stream whose first tokens are held back and judged before any reaches the client."""
        pump = EventPump(self.pool.stream(target, fitted.messages, params))
        # Without a confidence threshold there is nothing to judge: only the first token is awaited, so a
        # failure before it still escalates and the client's time to first token is the engine's.
        hold = self.settings.hold_tokens if target.min_confidence > 0 else 1
        try:
            held, ended = await hold_back(pump, hold, self.settings.hold_max_ms)
            logprobs = [lp for e in held for lp in e.get("logprobs", ())]
            confidence = answer_confidence(logprobs, target.model.calibration)
            low = self._judge(target, confidence, may_escalate)
        except BaseException:
            await pump.aclose()
            raise
        return Tier2Outcome(target, fitted, confidence, low,
                            pieces=self._pieces(target, held, pump, ended, fitted))

    def _judge(self, target: Tier2Target, confidence: float, may_escalate: bool) -> bool:
        """Whether the answer is unsure; raises low_confidence when a higher tier may take it instead."""
        if confidence >= target.min_confidence:
            return False
        if may_escalate:
            raise Tier2Failure("low_confidence", f"{target.served_id}'s answer has confidence {confidence:.3f}, below "
                                                 f"its threshold {target.min_confidence:.3f}")
        return True

    async def _pieces(self, target: Tier2Target, held: list[dict], pump: EventPump, ended: bool,
                      fitted: Fitted) -> AsyncIterator[str | Tier2Answer]:
        """The held events, then the rest of the stream; the finished answer last."""
        parts: list[str] = []
        logprobs: list[float] = []
        finish, usage = None, None

        def take(event: dict) -> str | None:
            nonlocal finish, usage
            finish = event.get("finish_reason", finish)
            usage = event.get("usage", usage)
            if "delta" in event:
                parts.append(event["delta"])
                logprobs.extend(event["logprobs"])
                return event["delta"]
            return None

        try:
            for event in held:
                if (text := take(event)) is not None:
                    yield text
            if not ended:
                try:
                    async for event in pump:
                        if (text := take(event)) is not None:
                            yield text
                except Tier2Failure as exc:
                    # Part of the answer is out: another tier's answer cannot be spliced onto it.
                    raise ApiError(502, f"tier 2 failed mid-stream: {exc}", "upstream_error", code="tier2_failed") from exc
        finally:
            await pump.aclose()
        usage = usage or {}
        yield Tier2Answer("".join(parts), target.served_id, finish or "stop", usage.get("prompt_tokens"),
                          usage.get("completion_tokens") or len(logprobs),
                          answer_confidence(logprobs, target.model.calibration))
