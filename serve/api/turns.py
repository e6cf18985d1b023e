"""What a chat request becomes inside the gateway: the validated :class:`Turn` with its conversation, and the
:class:`Answer` any tier gives, with what the response, the store and the ledger need of it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import cached_property

from models.request import RequestView
from serve.api.protocol import ChatCompletionRequest
from serve.settings import TenantPolicy
from serve.tenancy.pii import Redactor


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the tenant its API key acts for (``http.tenant`` without a key), that tenant's
    policy, and whether the key is an admin key."""

    tenant: str
    policy: TenantPolicy
    admin: bool = False


@dataclass
class Turn:
    """One request after validation and conversation loading."""

    request: ChatCompletionRequest
    conversation_id: str | None
    history: list[dict]
    new_messages: list[dict]
    forced_tier: int | None
    view: RequestView
    # Who sent it: the conversation is its tenant's.
    caller: Caller
    # Written with the turn's messages, so a retried write cannot store them twice.
    turn_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # The HTTP request's id (X-Request-Id): the usage ledger records each request once.
    request_id: str = field(default_factory=lambda: f"req_{uuid.uuid4().hex}")
    # The tiers this request may use (the deployed ones, less tier 3 when the tenant keeps its PII in the
    # cluster) and why a tier is missing, for the reason field.
    available: set[int] = field(default_factory=lambda: {1, 2, 3})
    absent: dict[int, str] = field(default_factory=dict)
    # Set when the tenant's policy redacts PII for tier 3: the placeholders, and the messages tier 3 reads.
    redactor: Redactor | None = None
    redacted_messages: list[dict] | None = None
    # The whole conversation's prompt tokens as the reference model reads it, once counted
    # (:meth:`serve.tenancy.accounting.Accounting.baseline_prompt`): a limited tenant's admission and the baseline
    # price both need it.
    baseline_prompt_tokens: int | None = None

    @property
    def tenant(self) -> str:
        """The tenant whose conversation this is."""
        return self.caller.tenant

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
        :func:`serve.tiers.constraints.tier2_blocker`)."""
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
