"""``POST /v1/chat/completions`` and ``POST /v1/route``: from a validated request to an answer.

:class:`ServingChat` loads the tenant's conversation, checks the tenant's limits, asks the router, applies
the policy (tier 1's and tier 2's constraints, the tenant's PII rule), dispatches to a tier (escalating
upwards when a tier is unsure, cannot answer in the form asked, or is absent), and hands the answer to
accounting and the store. The tiers' own logic lives in ``tier1_serving``, ``tier2_serving`` and
``tier3_serving``; the SSE framing in ``streaming``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from fastapi.responses import JSONResponse, StreamingResponse

from models import language
from models.quality import canonical
from models.router import RouteDecision, RouteInput
from serve import metrics
from serve.api.errors import ApiError
from serve.api.protocol import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    TierwiseInfo,
    Usage,
    new_records,
    request_view,
)
from serve.api.serving_models import RETRY_AFTER_S, ServingModels
from serve.api.streaming import Piece, chunk_events
from serve.api.turns import Answer, Caller, Turn
from serve.settings import Settings
from serve.store import ConversationStore, StoreUnavailable
from serve.tenancy.accounting import Accounting
from serve.tenancy.admission import Tenancy
from serve.tenancy.pii import PiiScanner, Redactor
from serve.tiers.constraints import tier1_blocker, tier2_blocker
from serve.tiers.policy import TierChoice, choose_tier, escalate, resolve_available
from serve.tiers.tier1 import Tier1Service
from serve.tiers.tier2 import Tier2Outcome, Tier2Service
from serve.tiers.tier2_client import Tier2Answer, Tier2Failure, Tier2Target
from serve.tiers.tier3 import Tier3Service
from serve.tiers.tier3_client import Tier3Unavailable

# Status and code a client that pinned a tier-2 model gets when tier 2 fails, by cause.
TIER2_ERRORS = {"overload": (503, "tier2_overloaded"), "timeout": (504, "tier2_timeout"),
                "failure": (502, "tier2_failed"), "no_fit": (503, "tier2_no_model"),
                "rejected": (502, "tier2_rejected")}


class ServingChat:
    """Chat completions of one gateway replica.

    ``router`` and ``tier1`` are batchers in this replica or handles to their deployments (the same
    interface: ``deployments/router.py``, ``deployments/tier1.py``); ``tier2`` is the tier-2 service (None:
    tier 2 not deployed); ``tier3`` the tier-3 service over the forwarder.
    """

    def __init__(self, settings: Settings, models: ServingModels, tenancy: Tenancy, accounting: Accounting,
                 store: ConversationStore, router, tier1, tier1_service: Tier1Service, tier2: Tier2Service | None,
                 tier3: Tier3Service, pii: PiiScanner):
        self.settings, self.models, self.tenancy, self.accounting = settings, models, tenancy, accounting
        self.store, self.router, self.tier1, self.tier1_service = store, router, tier1, tier1_service
        self.tier2, self.tier3, self.pii = tier2, tier3, pii
        self.languages = frozenset(settings.tier1.languages)
        # The language check's model loads now rather than on a client's first request.
        language.preload()

    # -- validation and state ----------------------------------------------------------------------

    async def prepare(self, request: ChatCompletionRequest, conversation_id: str | None, caller: Caller) -> Turn:
        """Check the request's size, load the caller's conversation and split off the new messages."""
        limits = self.settings.http
        if len(request.messages) > limits.max_messages:
            raise ApiError(400, f"messages: {len(request.messages)} messages exceed the limit of "
                                f"{limits.max_messages}", param="messages", code="too_many_messages")
        for i, m in enumerate(request.messages):
            text = m.text()
            if len(text) > limits.max_message_chars:
                raise ApiError(413, f"messages.{i}.content: {len(text)} characters exceed the limit of "
                                    f"{limits.max_message_chars}", param=f"messages.{i}.content",
                               code="message_too_large")
        forced = self.models.forced_tier(request.model)
        history = await self._load(caller.tenant, conversation_id) if conversation_id is not None else []
        # A client that resent the whole conversation gets only what is new kept.
        new = new_records(request, history)
        if not any(m["role"] == "user" for m in new):
            raise ApiError(400, "messages: no new user message after the stored conversation",
                           param="messages", code="invalid_value")
        turn = Turn(request, conversation_id, history, new, forced, request_view(request, history), caller)
        turn.available, turn.absent = set(self.models.available), dict(self.models.absent)
        return turn

    async def _load(self, tenant: str, conversation_id: str) -> list[dict]:
        try:
            return await self.store.load(tenant, conversation_id)
        except ValueError as exc:
            raise ApiError(400, f"X-Conversation-Id: {exc}", param="X-Conversation-Id") from exc
        except StoreUnavailable as exc:
            raise ApiError(503, "the conversation store is unavailable, so this conversation's history cannot "
                                "be read; retry later, or send the request without X-Conversation-Id",
                           "service_unavailable", headers={"Retry-After": RETRY_AFTER_S}) from exc

    async def _save(self, turn: Turn, answer: Answer, info: TierwiseInfo) -> None:
        if turn.conversation_id is None:
            return
        record = answer.message() | {"tierwise": {"tier": info.tier, "model": info.model, "task": info.task}}
        try:
            await self.store.append(turn.tenant, turn.conversation_id, turn.new_messages + [record], turn.turn_id)
        except StoreUnavailable as exc:
            raise ApiError(503, "the answer was generated but the conversation store is unavailable, so the "
                                "turn was not saved; retry later", "service_unavailable",
                           headers={"Retry-After": RETRY_AFTER_S}) from exc

    # -- PII ----------------------------------------------------------------------------------------

    async def _apply_pii_policy(self, turn: Turn) -> None:
        """Scan the conversation for PII when the tenant's policy asks: ``keep_in_cluster`` takes tier 3
        away from a request that carries any, ``redact`` readies the placeholders tier 3 will see."""
        policy = turn.caller.policy.pii
        if policy == "allow" or not self.models.can_answer(3):
            return
        found = await self.pii.scan(turn.messages)
        if not found.any:
            return
        if policy == "keep_in_cluster":
            turn.available.discard(3)
            turn.absent[3] = (f"the request carries PII ({', '.join(found.types)}) and tenant {turn.tenant}'s "
                              f"policy keeps PII in the cluster (tiers 1-2)")
        else:
            turn.redactor = Redactor()
            turn.redacted_messages = turn.redactor.redact_messages(turn.messages, found.spans)

    # -- routing ------------------------------------------------------------------------------------

    @staticmethod
    def route_input(turn: Turn) -> RouteInput:
        """What the router reads: the newest user message, the system prompt (read with it: it may hold
        the instruction), and the earlier turns as context."""
        return RouteInput(turn.view.user, turn.view.context, turn.view.system)

    async def _timed_route(self, turn: Turn) -> RouteDecision:
        started = time.perf_counter()
        decision = await self.router.route(self.route_input(turn))
        metrics.ROUTER.labels().observe(time.perf_counter() - started)
        return decision

    async def decide(self, turn: Turn) -> tuple[RouteDecision, TierChoice]:
        """The router's proposal and the tier the policy picks: a deployed one the tenant's PII rule allows,
        and tier 1 only when the request is one tier 1 may answer (no tools, media or logprobs; a language it
        reads)."""
        if turn.forced_tier in (2, 3):
            # The client chose a generating model: the router's verdict would not change the tier, and its
            # pass would add to the time to first token (tier 1 still reads the request to answer it).
            decision = RouteDecision("unrouted", turn.forced_tier, 1.0, "not routed", {})
            await self._apply_pii_policy(turn)
        else:
            decision, _ = await asyncio.gather(self._timed_route(turn), self._apply_pii_policy(turn))
        if turn.forced_tier == 3 and 3 not in turn.available:
            raise ApiError(400, f"model {turn.request.model!r} cannot answer this request: {turn.absent[3]}",
                           param="model", code="pii_kept_in_cluster")
        choice = choose_tier(decision.tier, decision.confidence, decision.reason,
                             previous_tier=turn.previous_tier, forced_tier=turn.forced_tier,
                             sticky_max_confidence=self.settings.router.sticky_max_confidence)
        if choice.tier > max(turn.available):
            # Only a tier above every allowed one was proposed: the highest allowed answers instead.
            top = max(turn.available)
            choice = TierChoice(top, f"{choice.reason}; {turn.absent.get(choice.tier, '')}; answered on tier {top}",
                                choice.tier, "pii_kept_in_cluster")
        resolved = resolve_available(choice, turn.available, turn.absent)
        if resolved is None:
            raise ApiError(503, f"no tier at or above tier {choice.tier} is deployed", "service_unavailable")
        if resolved.tier == 1:
            blocker = tier1_blocker(turn.view, self.languages, decision.parsed.payload if decision.parsed else "")
            if blocker and turn.forced_tier == 1:
                raise ApiError(400, f"model {self.models.tier1_model!r} cannot answer this request: {blocker}; ask "
                                    f"for model 'auto' or a tier-3 model", param="model", code="unsupported_by_tier1")
            if blocker:
                up = escalate(resolved, turn.available, f"tier 1 cannot answer: {blocker}", "tier1_blocked")
                if up is None:
                    raise ApiError(503, f"tier 1 cannot answer ({blocker}) and no higher tier "
                                        f"{'may take it' if 3 in turn.absent else 'is deployed'}"
                                        f"{': ' + turn.absent[3] if 3 in turn.absent else ''}",
                                   "service_unavailable")
                resolved = up
        if resolved.tier == 2:
            resolved = self._tier2_allowed(turn, resolved)
        return decision, resolved

    def _tier2_allowed(self, turn: Turn, choice: TierChoice) -> TierChoice:
        """``choice`` when tier 2 may answer the request, else the tier above it (or a 400 for a client that
        pinned a tier-2 model)."""
        blocker = tier2_blocker(turn.view)
        if blocker is None:
            return choice
        if turn.forced_tier == 2:
            raise ApiError(400, f"model {turn.request.model!r} cannot answer this request: {blocker}; ask for model "
                                f"'auto' or a tier-3 model", param="model", code="unsupported_by_tier2")
        up = escalate(choice, turn.available, f"tier 2 cannot answer: {blocker}", "tier2_blocked")
        if up is None:
            raise ApiError(503, f"tier 2 cannot answer ({blocker}) and no higher tier can"
                                f"{': ' + turn.absent[3] if 3 in turn.absent else ''}", "service_unavailable")
        return up

    async def route(self, request: ChatCompletionRequest, conversation_id: str | None,
                    caller: Caller) -> TierwiseInfo:
        """``POST /v1/route``: the decision and the scores behind it, nothing generated."""
        started = time.perf_counter()
        turn = await self.prepare(request, conversation_id, caller)
        decision, choice = await self.decide(turn)
        model = self.models.model_of(choice.tier)
        if choice.tier == 2:
            # The model chat would try first (its window and answer are only known by calling it).
            try:
                targets, choice = self._tier2_plan(turn, decision, choice)
                model = targets[0].served_id
            except Tier2Failure as failure:
                choice = self._after_tier2_failure(turn, choice, failure)
                model = self.models.model_of(choice.tier)
        scores = decision.explain() | {"latency_ms": round((time.perf_counter() - started) * 1000, 3)}
        return self._info(decision, choice, model, turn, scores=scores)

    @staticmethod
    def _info(decision: RouteDecision, choice: TierChoice, model: str, turn: Turn, **extra) -> TierwiseInfo:
        return TierwiseInfo(tier=choice.tier, model=model, task=decision.task, reason=choice.reason,
                            confidence=round(decision.confidence, 4), escalated_from=choice.escalated_from,
                            escalation_cause=choice.cause, conversation_id=turn.conversation_id,
                            pii_redacted=turn.redactor is not None and choice.tier == 3 or None, **extra)

    # -- chat ---------------------------------------------------------------------------------------

    async def chat(self, request: ChatCompletionRequest, conversation_id: str | None, caller: Caller,
                   request_id: str):
        """``POST /v1/chat/completions``: a JSON response or an SSE stream."""
        started = time.perf_counter()
        turn = await self.prepare(request, conversation_id, caller)
        turn.request_id = request_id
        if caller.policy.limited:
            await self.tenancy.admit(caller, await self.accounting.baseline_prompt(turn))
        decision, choice = await self.decide(turn)
        if choice.tier == 1:
            tier1_answer = await self.tier1.answer(decision.tier1_request(turn.view.user))
            content, choice, low_confidence = self.tier1_service.settle(tier1_answer, decision, choice, turn)
            if choice.tier == 1:
                info = self._info(decision, choice, self.models.tier1_model, turn,
                                  low_confidence=low_confidence or None)
                answer = await self.tier1_service.to_answer(tier1_answer, content, turn)
                return await self._respond(turn, info, started, answer, self._one_piece(answer) if request.stream
                                           else None)
        if choice.tier == 2:
            outcome, choice = await self._tier2_answer(turn, decision, choice)
            if outcome is not None:
                info = self._info(decision, choice, outcome.target.served_id, turn,
                                  low_confidence=outcome.low_confidence or None,
                                  answer_confidence=round(outcome.confidence, 4),
                                  summarised_messages=outcome.fitted.summarised or None)
                if outcome.pieces is not None:
                    return await self._respond(turn, info, started, None, self._tier2_pieces(outcome, turn))
                return await self._respond(turn, info, started,
                                           await self._tier2_to_answer(outcome.answer, outcome, turn))
        info = self._info(decision, choice, self.models.model_of(3), turn)
        messages = turn.redacted_messages if turn.redactor is not None else turn.messages
        if request.stream:
            pieces = await self.tier3.stream(turn, info, messages, turn.redactor)
            return await self._respond(turn, info, started, None, pieces)
        answer = await self.tier3.complete(turn, info, messages, turn.redactor)
        info.model = answer.model
        return await self._respond(turn, info, started, answer)

    async def _respond(self, turn: Turn, info: TierwiseInfo, started: float, answer: Answer | None,
                       pieces: AsyncIterator[Piece] | None = None):
        headers = {"X-Tierwise-Tier": str(info.tier), "X-Tierwise-Model": info.model}
        if info.low_confidence:
            headers["X-Tierwise-Low-Confidence"] = "true"
        if pieces is not None:
            include_usage = bool(turn.request.stream_options and turn.request.stream_options.include_usage)

            async def on_answer(piece: Answer) -> None:
                await self._settle(turn, info, piece, started)

            def on_error(exc: ApiError | Tier3Unavailable) -> ApiError:
                err = exc if isinstance(exc, ApiError) else self.tier3.upstream_error(exc, info)
                self.accounting.observe(info, started, err.status)
                return err

            events = chunk_events(info, pieces, include_usage, started, on_answer, on_error)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        await self._settle(turn, info, answer, started)
        body = ChatCompletionResponse(
            model=answer.model,
            choices=[Choice(message=AssistantMessage(**answer.message()), finish_reason=answer.finish_reason)],
            usage=Usage(prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
                        total_tokens=answer.prompt_tokens + answer.completion_tokens),
            tierwise=info,
        )
        payload = body.model_dump(exclude_none=True)
        # OpenAI sends content: null on a message that only calls tools.
        payload["choices"][0]["message"].setdefault("content", None)
        return JSONResponse(payload, headers=headers | {"X-Tierwise-Model": answer.model})

    async def _settle(self, turn: Turn, info: TierwiseInfo, answer: Answer, started: float) -> None:
        """Price the answer, save the turn, charge the tenant and record the usage."""
        self.accounting.price(info, answer)
        await self._save(turn, answer, info)
        await self.accounting.settle(turn.caller, info, answer, turn.request_id)
        self.accounting.observe(info, started, answer=answer)

    @staticmethod
    async def _one_piece(answer: Answer) -> AsyncIterator[Piece]:
        yield answer.content
        yield answer

    # -- tier 2 -------------------------------------------------------------------------------------

    async def _tier2_answer(self, turn: Turn, decision: RouteDecision,
                            choice: TierChoice) -> tuple[Tier2Outcome | None, TierChoice]:
        """Tier 2's answer and the choice that records how it was picked, or (None, the tier it escalated
        to). A client that pinned a tier-2 model gets its answer or an error, never another tier."""
        request = turn.request
        may_escalate = turn.forced_tier != 2 and self.models.can_answer(3, turn.available)
        try:
            targets, choice = self._tier2_plan(turn, decision, choice)
            target, fitted, note = await self.tier2.fit(targets, turn.text_messages, request.requested_output_tokens(),
                                                        turn.conversation)
            params = request.generation_params()
            if request.stream:
                outcome = await self.tier2.stream(target, fitted, params, may_escalate)
            else:
                outcome = await self.tier2.complete(target, fitted, params, may_escalate)
        except Tier2Failure as failure:
            return None, self._after_tier2_failure(turn, choice, failure)
        reason = choice.reason + note
        if outcome.low_confidence:
            reason += f"; unsure (confidence {outcome.confidence:.3f}) but no higher tier can answer"
        return outcome, replace(choice, reason=reason)

    def _tier2_plan(self, turn: Turn, decision: RouteDecision,
                    choice: TierChoice) -> tuple[list[Tier2Target], TierChoice]:
        """The tier-2 targets to try, best first, and the choice whose reason says why (a pinned model's
        reason already does); raises :class:`Tier2Failure` when none fits."""
        pinned = turn.request.model if turn.forced_tier == 2 else None
        quality = self.settings.router.quality
        targets, why = self.tier2.targets(
            decision.task, turn.request.requested_output_tokens(), pinned, turn.previous_model,
            lambda t: decision.quality.get(canonical(t.model.quality_as or quality.tier2_as)), quality.threshold)
        return targets, choice if pinned else replace(choice, reason=f"{choice.reason}; {why}")

    def _after_tier2_failure(self, turn: Turn, choice: TierChoice, failure: Tier2Failure) -> TierChoice:
        """The tier a failed tier-2 request goes to, or the error it gets."""
        what = f"tier 2 {failure.cause.replace('_', ' ')}: {failure}"
        if turn.forced_tier != 2:
            up = escalate(choice, turn.available, what, f"tier2_{failure.cause}")
            if up is not None and self.models.can_answer(up.tier, turn.available):
                return up
        if failure.cause == "too_long" or (failure.cause == "rejected" and failure.status == 400):
            raise ApiError(400, f"{failure}" + ("" if turn.forced_tier == 2 else "; no tier above tier 2 can answer"),
                           param="messages", code="context_length_exceeded" if failure.cause == "too_long" else None)
        status, code = TIER2_ERRORS.get(failure.cause, (502, "tier2_failed"))
        headers = {"Retry-After": RETRY_AFTER_S} if status in (503, 429) else None
        unable = "" if turn.forced_tier == 2 else " and no tier above it can answer"
        if turn.forced_tier != 2 and 3 in turn.absent:
            unable += f" ({turn.absent[3]})"
        raise ApiError(status, f"{what}{unable}", "service_unavailable" if status == 503 else "upstream_error",
                       code=code, headers=headers)

    async def _tier2_to_answer(self, answer: Tier2Answer, outcome: Tier2Outcome, turn: Turn) -> Answer:
        model = outcome.target.model.name
        prompt = (answer.prompt_tokens or outcome.fitted.prompt_tokens
                  or await self.accounting.count_prompt(model, outcome.fitted.messages))
        return Answer(answer.content, answer.model, prompt,
                      answer.completion_tokens or await self.accounting.count(model, answer.content),
                      finish_reason=answer.finish_reason,
                      baseline_prompt_tokens=await self.accounting.baseline_prompt(turn)
                      if outcome.fitted.summarised else None,
                      price_model=model)

    async def _tier2_pieces(self, outcome: Tier2Outcome, turn: Turn) -> AsyncIterator[Piece]:
        async for piece in outcome.pieces:
            yield await self._tier2_to_answer(piece, outcome, turn) if isinstance(piece, Tier2Answer) else piece
