"""The gateway's logic: chat completions, routing decisions and tier-1 tasks over the deployment handles.

FastAPI routes (``serve/api.py``) parse and validate; :class:`ChatService` loads the conversation, asks
the router, applies the policy and tier 1's constraints (``serve/constraints.py``), dispatches to a tier
(escalating upwards when a tier is unsure, cannot answer in the form asked, or is absent), prices the
answer and appends the turn to the store.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from functools import cached_property

from fastapi.responses import JSONResponse, StreamingResponse

from deployments.tier2 import Tier2Answer, Tier2Failure, Tier2Pool, Tier2Target
from deployments.tier3 import PROVIDER_REFUSALS, Completion, Tier3Unavailable
from models import language
from models.answer_format import CannotRender, render
from models.encoder import load_tokenizer
from models.quality import canonical
from models.request import RequestView
from models.router import RouteDecision, RouteInput
from models.tier1 import Tier1Answer, Tier1Request
from serve import metrics
from serve.auth import KEY_PREFIX, KeyLookup
from serve.constraints import tier1_blocker, tier2_blocker
from serve.errors import ApiError
from serve.policy import TierChoice, choose_tier, escalate, resolve_available
from serve.pricing import PriceTable
from serve.protocol import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    DeltaMessage,
    ModelCard,
    ModelList,
    TaskResponse,
    TierwiseInfo,
    Usage,
    completion_id,
    content_text,
    new_records,
    request_view,
)
from serve.settings import Settings
from serve.store import ConversationStore, StoreUnavailable
from serve.tier2_serving import Tier2Outcome, Tier2Service

ROUTER_ALIASES = ("auto", "tierwise-auto")
TASK_ENDPOINTS = ("sentiment", "entities", "faq", "intent")
# Per-message framing tokens, as chat templates add them (OpenAI counts about 4 a message).
TOKENS_PER_MESSAGE = 4
RETRY_AFTER_S = "5"
# Status and code a client that pinned a tier-2 model gets when tier 2 fails, by cause.
TIER2_ERRORS = {"overload": (503, "tier2_overloaded"), "timeout": (504, "tier2_timeout"),
                "failure": (502, "tier2_failed"), "no_fit": (503, "tier2_no_model"),
                "rejected": (502, "tier2_rejected")}


@dataclass
class Turn:
    """One request after validation and conversation loading."""

    request: ChatCompletionRequest
    conversation_id: str | None
    history: list[dict]
    new_messages: list[dict]
    forced_tier: int | None
    view: RequestView
    # Whose conversation it is: the caller's API key's tenant (http.tenant without a key).
    tenant: str
    # Written with the turn's messages, so a retried write cannot store them twice.
    turn_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def conversation(self) -> tuple[str, str] | None:
        """(tenant, conversation id) of a stored conversation; None for a stateless request."""
        return None if self.conversation_id is None else (self.tenant, self.conversation_id)

    @cached_property
    def messages(self) -> list[dict]:
        """What tier 3 reads: the stored history then the new messages, Tierwise's metadata stripped, and
        content parts (images, audio, files), tool calls, tool results and names as the client sent them."""
        return [{k: v for k, v in m.items() if k != "tierwise"} for m in self.history + self.new_messages]

    @cached_property
    def text_messages(self) -> list[dict]:
        """What tier 2 reads: role and content only (requests with tools never reach it; see
        :func:`serve.constraints.tier2_blocker`)."""
        return [{"role": m["role"], "content": m["content"] or ""} for m in self.history + self.new_messages]

    @cached_property
    def _last_routing(self) -> dict:
        """The routing record of the conversation's last answered assistant turn ({} when none)."""
        return next((m["tierwise"] for m in reversed(self.history) if m["role"] == "assistant" and "tierwise" in m),
                    {})

    @property
    def previous_model(self) -> str | None:
        """The model that answered the conversation's last assistant turn."""
        return self._last_routing.get("model")

    @property
    def previous_tier(self) -> int | None:
        """The tier that answered the conversation's last assistant turn."""
        return self._last_routing.get("tier")


def merge_tool_call_deltas(calls: dict[int, dict], deltas: list[dict]) -> None:
    """Fold streamed tool-call pieces into whole calls, by index: the first piece of a call brings its id,
    type and function name; the arguments arrive in pieces that join in order."""
    for delta in deltas:
        call = calls.setdefault(delta.get("index", 0), {"id": None, "type": "function",
                                                       "function": {"name": "", "arguments": ""}})
        call["id"] = delta.get("id") or call["id"]
        call["type"] = delta.get("type") or call["type"]
        function = delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


@dataclass
class Answer:
    """A finished answer of any tier, with what the response and the ledger need."""

    content: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    result: dict | None = None
    finish_reason: str = "stop"
    # What the reference model would have read, when more than this answer's model did (tier 1 reads
    # only the newest message; a frontier model would read the whole conversation).
    baseline_prompt_tokens: int | None = None
    # The price-table entry, when not ``model`` (a tier-2 adapter is priced as its base model).
    price_model: str | None = None
    # Tier 3's tool calls and refusal, passed back as the provider sent them.
    tool_calls: list[dict] | None = None
    refusal: str | None = None

    def message(self) -> dict:
        """The assistant message as stored and returned (``content: null`` when it only calls tools)."""
        extra = {k: v for k, v in (("tool_calls", self.tool_calls), ("refusal", self.refusal)) if v}
        return {"role": "assistant", "content": None if self.tool_calls and not self.content else self.content,
                **extra}


class ChatService:
    """Everything behind the OpenAI-compatible routes of one gateway replica.

    ``router`` and ``tier1`` are batchers in this replica or handles to their deployments (the same
    interface: ``deployments/router.py``, ``deployments/tier1.py``); ``tier2`` is the pool of tier-2
    deployment handles (None or empty: tier 2 not deployed); ``tier3`` is the forwarder's handle.
    ``tier3_unconfigured`` (why tier 3 cannot answer, or None) is asked once at start-up.
    """

    def __init__(self, settings: Settings, router, tier1, tier3, tier3_unconfigured: str | None,
                 store: ConversationStore, prices: PriceTable, tier2: Tier2Pool | None = None,
                 keys: KeyLookup | None = None):
        self.settings, self.router, self.tier1, self.tier3 = settings, router, tier1, tier3
        self.keys = keys
        self.tier3_unconfigured, self.store, self.prices = tier3_unconfigured, store, prices
        self.tokenizer = load_tokenizer(settings.encoder.model_dir)
        self.tier1_model = settings.tier1.model_name
        self.tier3_models = [p.model for p in settings.tier3.providers]
        self.languages = frozenset(settings.tier1.languages)
        self.tier2_pool = tier2
        self.tier2 = Tier2Service(settings.tier2, tier2, store) if tier2 else None
        self.tier2_models = [t.served_id for t in tier2.targets] if tier2 else []
        self.available = {1, 3} | ({2} if self.tier2_models else set())
        unplaced = tier2.unplaced if tier2 else {}
        # Why tier 2 is missing when it was configured but nothing could be placed, for the reason field.
        self.absent = {}
        if unplaced and not self.tier2_models:
            self.absent[2] = "tier 2 not deployed: " + "; ".join(f"{m} cannot be placed ({why})"
                                                                  for m, why in unplaced.items())
        language.preload()

    # -- models -------------------------------------------------------------------------------------

    def list_models(self) -> ModelList:
        """The router aliases and the concrete models a client may ask for."""
        cards = [ModelCard(id=a) for a in ROUTER_ALIASES] + [ModelCard(id=self.tier1_model, tier=1)]
        cards += [ModelCard(id=m, tier=2, owned_by="tier2-vllm") for m in self.tier2_models]
        cards += [ModelCard(id=m, tier=3, owned_by="tier3-provider") for m in self.tier3_models]
        return ModelList(data=cards)

    def forced_tier(self, model: str) -> int | None:
        """None for a router alias, else the tier of a concrete model; 404 for an unknown one."""
        if model in ROUTER_ALIASES:
            return None
        if model == self.tier1_model:
            return 1
        if model in self.tier2_models:
            return 2
        if model in self.tier3_models:
            return 3
        unplaced = self.tier2_pool.unplaced if self.tier2_pool else {}
        if model in unplaced:
            raise ApiError(503, f"model {model!r} is configured but cannot be placed on this cluster: "
                                f"{unplaced[model]}; ask for model 'auto'", "service_unavailable", param="model",
                           code="model_not_placed", headers={"Retry-After": RETRY_AFTER_S})
        known = ", ".join([*ROUTER_ALIASES, self.tier1_model, *self.tier2_models, *self.tier3_models])
        raise ApiError(404, f"model {model!r} does not exist; available: {known}", param="model",
                       code="model_not_found")

    def model_of(self, tier: int) -> str:
        """The model a tier answers with (the first provider's for tier 3, until the provider says)."""
        if tier == 1:
            return self.tier1_model
        if tier == 2:
            return self.tier2_models[0]
        return self.tier3_models[0] if self.tier3_models else "unconfigured"

    def can_answer(self, tier: int) -> bool:
        """Whether ``tier`` is deployed and able to answer (tier 3 needs a configured provider)."""
        return tier in self.available and (tier != 3 or self.tier3_unconfigured is None)

    # -- validation and state ----------------------------------------------------------------------

    async def tenant(self, authorization: str | None) -> str:
        """The caller's tenant, from ``Authorization: Bearer <key>``.

        A Tierwise key (``tw-...``) must be known; without one the caller is ``http.tenant``, unless
        ``http.require_api_key`` is set. A bearer token that is not a Tierwise key is ignored when keys are
        optional: OpenAI clients always send one, often a placeholder."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        required = self.settings.http.require_api_key
        if not key.startswith(KEY_PREFIX):
            if required:
                raise ApiError(401, "an API key is required: send Authorization: Bearer <key> (create one with "
                                    "`tierwise keys create --tenant NAME`)", "invalid_request_error",
                               code="missing_api_key")
            return self.settings.http.tenant
        if self.keys is None:
            raise ApiError(401, "API keys are checked in Redis, which this gateway does not use (store.backend)",
                           "invalid_request_error", code="invalid_api_key")
        try:
            tenant = await self.keys.tenant_of(key)
        except StoreUnavailable as exc:
            raise ApiError(503, "the key store is unavailable; retry later", "service_unavailable",
                           headers={"Retry-After": RETRY_AFTER_S}) from exc
        if tenant is None:
            raise ApiError(401, "invalid or revoked API key", "invalid_request_error", code="invalid_api_key")
        return tenant

    async def prepare(self, request: ChatCompletionRequest, conversation_id: str | None, tenant: str) -> Turn:
        """Check limits, load ``tenant``'s conversation and split off the new messages."""
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
        forced = self.forced_tier(request.model)
        history = await self._load(tenant, conversation_id) if conversation_id is not None else []
        # A client that resent the whole conversation gets only what is new kept.
        new = new_records(request, history)
        if not any(m["role"] == "user" for m in new):
            raise ApiError(400, "messages: no new user message after the stored conversation",
                           param="messages", code="invalid_value")
        return Turn(request, conversation_id, history, new, forced, request_view(request, history), tenant)

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
            await self.store.append(turn.tenant, turn.conversation_id, turn.new_messages + [record],
                                    turn.turn_id)
        except StoreUnavailable as exc:
            raise ApiError(503, "the answer was generated but the conversation store is unavailable, so the "
                                "turn was not saved; retry later", "service_unavailable",
                           headers={"Retry-After": RETRY_AFTER_S}) from exc

    # -- routing ------------------------------------------------------------------------------------

    def route_input(self, turn: Turn) -> RouteInput:
        """What the router reads: the newest user message, the system prompt (read with it: it may hold
        the instruction), and the earlier turns as context."""
        return RouteInput(turn.view.user, turn.view.context, turn.view.system)

    async def decide(self, turn: Turn) -> tuple[RouteDecision, TierChoice]:
        """The router's proposal and the tier the policy picks: a deployed one, and tier 1 only when the
        request is one tier 1 may answer (no tools, media or logprobs; a language it reads)."""
        if turn.forced_tier in (2, 3):
            # The client chose a generating model: the router's verdict would not change the tier, and its
            # pass would add to the time to first token (tier 1 still reads the request to answer it).
            decision = RouteDecision("unrouted", turn.forced_tier, 1.0, "not routed", {})
        else:
            decision = await self.router.route(self.route_input(turn))
        choice = choose_tier(decision.tier, decision.confidence, decision.reason,
                             previous_tier=turn.previous_tier, forced_tier=turn.forced_tier,
                             sticky_max_confidence=self.settings.router.sticky_max_confidence)
        resolved = resolve_available(choice, self.available, self.absent)
        if resolved is None:
            raise ApiError(503, f"no tier at or above tier {choice.tier} is deployed", "service_unavailable")
        if resolved.tier == 1:
            blocker = tier1_blocker(turn.view, self.languages, decision.parsed.payload if decision.parsed else "")
            if blocker and turn.forced_tier == 1:
                raise ApiError(400, f"model {self.tier1_model!r} cannot answer this request: {blocker}; ask for "
                                    f"model 'auto' or a tier-3 model", param="model", code="unsupported_by_tier1")
            if blocker:
                up = escalate(resolved, self.available, f"tier 1 cannot answer: {blocker}", "tier1_blocked")
                if up is None:
                    raise ApiError(503, f"tier 1 cannot answer ({blocker}) and no higher tier is deployed",
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
        up = escalate(choice, self.available, f"tier 2 cannot answer: {blocker}", "tier2_blocked")
        if up is None:
            raise ApiError(503, f"tier 2 cannot answer ({blocker}) and no higher tier is deployed",
                           "service_unavailable")
        return up

    async def route(self, request: ChatCompletionRequest, conversation_id: str | None,
                    tenant: str) -> TierwiseInfo:
        """``POST /v1/route``: the decision and the scores behind it, nothing generated."""
        started = time.perf_counter()
        turn = await self.prepare(request, conversation_id, tenant)
        decision, choice = await self.decide(turn)
        model = self.model_of(choice.tier)
        if choice.tier == 2:
            # The model chat would try first (its window and answer are only known by calling it).
            try:
                targets, choice = self._tier2_plan(turn, decision, choice)
                model = targets[0].served_id
            except Tier2Failure as failure:
                choice = self._after_tier2_failure(turn, choice, failure)
                model = self.model_of(choice.tier)
        scores = decision.explain() | {"latency_ms": round((time.perf_counter() - started) * 1000, 3)}
        return self._info(decision, choice, model, turn, scores=scores)

    def _info(self, decision: RouteDecision, choice: TierChoice, model: str, turn: Turn, **extra) -> TierwiseInfo:
        return TierwiseInfo(tier=choice.tier, model=model, task=decision.task, reason=choice.reason,
                            confidence=round(decision.confidence, 4), escalated_from=choice.escalated_from,
                            escalation_cause=choice.cause, conversation_id=turn.conversation_id, **extra)

    # -- chat ---------------------------------------------------------------------------------------

    async def chat(self, request: ChatCompletionRequest, conversation_id: str | None, tenant: str):
        """``POST /v1/chat/completions``: a JSON response or an SSE stream."""
        started = time.perf_counter()
        turn = await self.prepare(request, conversation_id, tenant)
        decision, choice = await self.decide(turn)
        if choice.tier == 1:
            tier1_answer = await self.tier1.answer(decision.tier1_request(turn.view.user))
            content, choice, low_confidence = self._settle_tier1(tier1_answer, decision, choice, turn)
            if choice.tier == 1:
                info = self._info(decision, choice, self.tier1_model, turn, low_confidence=low_confidence or None)
                answer = self._tier1_to_answer(tier1_answer, content, turn)
                pieces = self._one_piece(answer) if request.stream else None
                return await self._respond(turn, info, started, answer, pieces)
        if choice.tier == 2:
            outcome, choice = await self._tier2_answer(turn, decision, choice)
            if outcome is not None:
                info = self._info(decision, choice, outcome.target.served_id, turn,
                                  low_confidence=outcome.low_confidence or None,
                                  answer_confidence=round(outcome.confidence, 4),
                                  summarised_messages=outcome.fitted.summarised or None)
                if outcome.pieces is not None:
                    return await self._respond(turn, info, started, None, self._tier2_pieces(outcome, turn))
                return await self._respond(turn, info, started, self._tier2_to_answer(outcome.answer, outcome, turn))
        return await self._tier3_answer(turn, self._info(decision, choice, self.model_of(3), turn), started)

    async def _respond(self, turn: Turn, info: TierwiseInfo, started: float, answer: Answer | None,
                       pieces: AsyncIterator[str | list | Answer] | None = None):
        headers = {"X-Tierwise-Tier": str(info.tier), "X-Tierwise-Model": info.model}
        if info.low_confidence:
            headers["X-Tierwise-Low-Confidence"] = "true"
        if pieces is not None:
            return self._stream_response(turn, info, headers, started, pieces)
        return await self._finish(turn, info, answer, headers, started)

    async def _tier3_answer(self, turn: Turn, info: TierwiseInfo, started: float):
        if self.tier3_unconfigured:
            raise ApiError(503, self.tier3_unconfigured, "service_unavailable", code="tier3_not_configured",
                           tierwise=info)
        request = turn.request
        # A client that named a tier-3 model gets the provider serving it first.
        pinned = request.model if turn.forced_tier == 3 else None
        if request.stream:
            stream = self.tier3.options(stream=True).stream.remote(turn.messages, request.generation_params(),
                                                                  pinned)
            first = await self._first_or_error(stream, info)
            # The answering provider's model names the stream everywhere: headers, chunks, the tierwise record.
            info.model = first.get("model") or info.model
            return await self._respond(turn, info, started, None, self._tier3_pieces(first, stream, turn))
        try:
            completion: Completion = await self.tier3.complete.remote(turn.messages, request.generation_params(),
                                                                      pinned)
        except Tier3Unavailable as exc:
            raise self._upstream_error(exc, info) from exc
        answer = Answer(completion.content, completion.model or info.model,
                        completion.prompt_tokens or self.count_prompt(turn.messages),
                        completion.completion_tokens or self.count(completion.content),
                        finish_reason=completion.finish_reason or "stop", tool_calls=completion.tool_calls,
                        refusal=completion.refusal)
        info.model = answer.model
        return await self._respond(turn, info, started, answer)

    # -- tier 2 -------------------------------------------------------------------------------------

    async def _tier2_answer(self, turn: Turn, decision: RouteDecision,
                            choice: TierChoice) -> tuple[Tier2Outcome | None, TierChoice]:
        """Tier 2's answer and the choice that records how it was picked, or (None, the tier it escalated
        to). A client that pinned a tier-2 model gets its answer or an error, never another tier."""
        request = turn.request
        may_escalate = turn.forced_tier != 2 and self.can_answer(3)
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
            up = escalate(choice, self.available, what, f"tier2_{failure.cause}")
            if up is not None and self.can_answer(up.tier):
                return up
        if failure.cause == "too_long" or (failure.cause == "rejected" and failure.status == 400):
            raise ApiError(400, f"{failure}" + ("" if turn.forced_tier == 2 else "; no tier above tier 2 can answer"),
                           param="messages", code="context_length_exceeded" if failure.cause == "too_long" else None)
        status, code = TIER2_ERRORS.get(failure.cause, (502, "tier2_failed"))
        headers = {"Retry-After": RETRY_AFTER_S} if status in (503, 429) else None
        unable = "" if turn.forced_tier == 2 else " and no tier above it can answer"
        raise ApiError(status, f"{what}{unable}", "service_unavailable" if status == 503 else "upstream_error",
                       code=code, headers=headers)

    def _tier2_to_answer(self, answer: Tier2Answer, outcome: Tier2Outcome, turn: Turn) -> Answer:
        return Answer(answer.content, answer.model,
                      answer.prompt_tokens or outcome.fitted.prompt_tokens or self.count_prompt(outcome.fitted.messages),
                      answer.completion_tokens or self.count(answer.content), finish_reason=answer.finish_reason,
                      baseline_prompt_tokens=self.count_prompt(turn.messages) if outcome.fitted.summarised else None,
                      price_model=outcome.target.model.name)

    async def _tier2_pieces(self, outcome: Tier2Outcome, turn: Turn) -> AsyncIterator[str | Answer]:
        async for piece in outcome.pieces:
            yield self._tier2_to_answer(piece, outcome, turn) if isinstance(piece, Tier2Answer) else piece

    def _settle_tier1(self, ans: Tier1Answer, decision: RouteDecision, choice: TierChoice,
                      turn: Turn) -> tuple[str | None, TierChoice, bool]:
        """Tier 1's reply in the form asked, or the tier that answers instead: (content or None, tier,
        low_confidence).

        An unsure answer, or one that cannot take the form asked (a JSON Schema tier 1 cannot fill), goes
        up to the next tier that can answer. When none can, ``tier1.when_unsure: answer`` gives tier 1's
        best answer marked low_confidence, ``refuse`` lets the request fail at the tier above (tier 3's 503
        when it is unconfigured). A client that pinned the tier-1 model gets tier 1's best answer, never a
        dearer tier, or a 400 when it cannot be given in the form asked.
        """
        content, doubts = None, []
        try:
            content = render(ans.task, ans.result, decision.parsed, turn.view.response_format)
        except CannotRender as exc:
            doubts.append(f"tier 1 cannot answer in the requested format: {exc}")
        if ans.escalate:
            doubts.append(f"tier 1 unsure: {ans.reason}")
        if not doubts:
            return content, choice, False
        why = "; ".join(doubts)
        if turn.forced_tier == 1:
            if content is None:
                schema = (turn.view.response_format or {}).get("type") == "json_schema"
                raise ApiError(400, f"model {self.tier1_model!r} cannot answer this request: {why}",
                               param="response_format" if schema else "model", code="unsupported_by_tier1")
            return content, TierChoice(1, f"{choice.reason}; {why}", choice.escalated_from), True
        up = escalate(choice, self.available, why, "tier1_unsure")
        if up is not None and self.can_answer(up.tier):
            return None, up, False
        if content is not None and self.settings.tier1.when_unsure == "answer":
            reason = f"{choice.reason}; {why}; no higher tier can answer, so this is tier 1's best answer"
            return content, TierChoice(1, reason, choice.escalated_from), True
        if up is None:
            raise ApiError(503, f"{why}, and no tier above tier 1 is deployed", "service_unavailable")
        return None, up, False

    def _tier1_to_answer(self, ans: Tier1Answer, content: str, turn: Turn) -> Answer:
        return Answer(content, self.tier1_model, ans.input_tokens, self.count(content),
                      result={"task": ans.task, "confidence": round(ans.confidence, 4), **ans.result},
                      baseline_prompt_tokens=self.count_prompt(turn.messages))

    def _price(self, info: TierwiseInfo, answer: Answer) -> None:
        info.model = answer.model
        info.result = answer.result
        info.cost_usd = round(self.prices.cost(answer.price_model or answer.model, answer.prompt_tokens,
                                               answer.completion_tokens), 10)
        baseline_prompt = answer.baseline_prompt_tokens or answer.prompt_tokens
        info.baseline_cost_usd = round(self.prices.baseline(baseline_prompt, answer.completion_tokens), 10)

    def _record(self, info: TierwiseInfo, started: float, status: int = 200) -> None:
        tier = str(info.tier)
        metrics.REQUESTS.labels("chat", tier, info.task, str(status)).inc()
        metrics.LATENCY.labels("chat", tier).observe(time.perf_counter() - started)
        if info.escalated_from is not None:
            metrics.ESCALATIONS.labels(str(info.escalated_from), tier, info.escalation_cause or "").inc()
        metrics.COST.labels(tier, info.model).inc(info.cost_usd or 0.0)
        metrics.BASELINE_COST.labels(tier).inc(info.baseline_cost_usd or 0.0)

    async def _finish(self, turn: Turn, info: TierwiseInfo, answer: Answer, headers: dict, started: float):
        self._price(info, answer)
        await self._save(turn, answer, info)
        self._record(info, started)
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

    # -- streaming ----------------------------------------------------------------------------------

    async def _one_piece(self, answer: Answer) -> AsyncIterator[str | Answer]:
        yield answer.content
        yield answer

    async def _first_or_error(self, stream, info: TierwiseInfo) -> dict:
        """The provider's first event; failures before it become an HTTP error, not a broken stream."""
        try:
            return await stream.__anext__()
        except Tier3Unavailable as exc:
            raise self._upstream_error(exc, info) from exc
        except StopAsyncIteration as exc:
            raise ApiError(502, "the tier-3 provider closed the stream without an answer", "upstream_error",
                           tierwise=info) from exc

    async def _tier3_pieces(self, first: dict, stream, turn: Turn) -> AsyncIterator[str | list | Answer]:
        """Text deltas (str), tool-call deltas (list) and, last, the whole answer."""
        parts: list[str] = []
        calls: dict[int, dict] = {}
        event = first
        while True:
            if event.get("done"):
                content = "".join(parts)
                yield Answer(content, event.get("model") or self.model_of(3),
                             event.get("prompt_tokens") or self.count_prompt(turn.messages),
                             event.get("completion_tokens") or self.count(content),
                             finish_reason=event.get("finish_reason") or "stop",
                             tool_calls=[calls[i] for i in sorted(calls)] or None)
                return
            if "tool_calls" in event:
                merge_tool_call_deltas(calls, event["tool_calls"])
                yield event["tool_calls"]
            else:
                parts.append(event["delta"])
                yield event["delta"]
            try:
                event = await stream.__anext__()
            except StopAsyncIteration:
                event = {"done": True}

    def _stream_response(self, turn: Turn, info: TierwiseInfo, headers: dict, started: float,
                         pieces: AsyncIterator[str | list | Answer]) -> StreamingResponse:
        chunk_id, created = completion_id(), int(time.time())
        include_usage = bool(turn.request.stream_options and turn.request.stream_options.include_usage)

        def sse(chunk: ChatCompletionChunk) -> str:
            body = chunk.model_dump(exclude_none=True)
            # OpenAI's chunks say finish_reason: null until the last one; clients test for the key.
            for choice in body["choices"]:
                choice.setdefault("finish_reason", None)
            # ASCII-escaped: line-oriented SSE readers (httpx's and requests' iter_lines) also split at U+2028,
            # U+0085 and the like, which a model's text may hold raw.
            return f"data: {json.dumps(body)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield sse(ChatCompletionChunk(id=chunk_id, created=created, model=info.model,
                                          choices=[ChunkChoice(delta=DeltaMessage(role="assistant", content=""))]))
            metrics.LATENCY.labels("chat_first_byte", str(info.tier)).observe(time.perf_counter() - started)
            try:
                async for piece in pieces:
                    if isinstance(piece, Answer):
                        self._price(info, piece)
                        await self._save(turn, piece, info)
                        self._record(info, started)
                        last = ChatCompletionChunk(
                            id=chunk_id, created=created, model=piece.model,
                            choices=[ChunkChoice(delta=DeltaMessage(), finish_reason=piece.finish_reason)])
                        if include_usage:
                            # As OpenAI sends it: a chunk of its own, with no choices, after the last one.
                            yield sse(last)
                            usage = Usage(prompt_tokens=piece.prompt_tokens, completion_tokens=piece.completion_tokens,
                                          total_tokens=piece.prompt_tokens + piece.completion_tokens)
                            last = ChatCompletionChunk(id=chunk_id, created=created, model=piece.model, choices=[],
                                                       usage=usage)
                        # Tierwise's routing record rides on the stream's last chunk, whichever that is.
                        last.tierwise = info
                        yield sse(last)
                    elif isinstance(piece, list):
                        yield sse(ChatCompletionChunk(id=chunk_id, created=created, model=info.model,
                                                      choices=[ChunkChoice(delta=DeltaMessage(tool_calls=piece))]))
                    elif piece:
                        yield sse(ChatCompletionChunk(id=chunk_id, created=created, model=info.model,
                                                      choices=[ChunkChoice(delta=DeltaMessage(content=piece))]))
            except (ApiError, Tier3Unavailable) as exc:
                err = exc if isinstance(exc, ApiError) else self._upstream_error(exc, info)
                self._record(info, started, err.status)
                yield f"data: {json.dumps(err.body())}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    def _upstream_error(self, exc: Tier3Unavailable, info: TierwiseInfo) -> ApiError:
        # The client's own error is theirs to fix (its 4xx); a provider that refused Tierwise, throttled it or
        # failed is the gateway's upstream problem (502).
        status = exc.status if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (
            429, *PROVIDER_REFUSALS) else 502
        kind = "invalid_request_error" if status < 500 else "upstream_error"
        return ApiError(status, f"tier 3 failed: {exc}", kind, code="tier3_failed", tierwise=info)

    # -- tasks --------------------------------------------------------------------------------------

    async def task(self, task: str, text: str) -> TaskResponse:
        """``POST /v1/tasks/{task}``: a tier-1 answer without routing."""
        if task not in TASK_ENDPOINTS:
            raise ApiError(404, f"unknown task {task!r}; tasks: {', '.join(TASK_ENDPOINTS)}", code="not_found")
        if len(text) > self.settings.http.max_message_chars:
            raise ApiError(413, f"text: {len(text)} characters exceed the limit of "
                                f"{self.settings.http.max_message_chars}", param="text", code="message_too_large")
        started = time.perf_counter()
        ans: Tier1Answer = await self.tier1.answer(Tier1Request(task, text))
        latency = time.perf_counter() - started
        metrics.REQUESTS.labels("task", "1", task, "200").inc()
        metrics.LATENCY.labels("task", "1").observe(latency)
        try:
            reply = render(ans.task, ans.result, None, None)
        except CannotRender:
            reply = None  # an abstention without a result
        return TaskResponse(task=task, result=ans.result, confidence=round(ans.confidence, 4), reply=reply,
                            model=self.tier1_model, abstained=ans.escalate, reason=ans.reason or None,
                            latency_ms=round(latency * 1000, 3))

    # -- health -------------------------------------------------------------------------------------

    async def readiness(self) -> dict:
        """Which parts answer; raises a 503 naming the ones that do not."""
        checks = {"store": await self.store.ping()}
        for name, part in (("router", self.router), ("tier1", self.tier1)):
            try:
                await asyncio.wait_for(part.ready(), timeout=2.0)
                checks[name] = True
            except Exception:  # noqa: BLE001 - any failure means "not ready", and says which part
                checks[name] = False
        failing = [k for k, ok in checks.items() if not ok]
        if failing:
            raise ApiError(503, f"not ready: {', '.join(failing)}", "service_unavailable",
                           headers={"Retry-After": RETRY_AFTER_S})
        # Tier 2 is reported, not required: while a model's replicas restart, its traffic escalates.
        tier2 = {"tier2": await self.tier2_pool.ready(), "tier2_unplaced": self.tier2_pool.unplaced} \
            if self.tier2_pool else {}
        return {"status": "ready", "store_backend": self.store.backend,
                "tier3_configured": self.tier3_unconfigured is None, **checks, **tier2}

    # -- tokens -------------------------------------------------------------------------------------

    def count(self, text: str) -> int:
        """Tokens of ``text`` by the encoder's WordPiece (a stand-in for the provider's tokenizer)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids) if text else 0

    def count_prompt(self, messages: list[dict]) -> int:
        """Prompt tokens of a conversation, with per-message framing."""
        return sum(self.count(content_text(m["content"])) + TOKENS_PER_MESSAGE for m in messages)
