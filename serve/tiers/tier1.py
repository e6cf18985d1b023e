"""The gateway's tier-1 logic: tier 1's reply in the form the client asked for, or the tier that answers
instead when tier 1 is unsure or cannot give that form."""

from __future__ import annotations

from models.answer_format import CannotRender, render
from models.router import RouteDecision
from models.tier1 import Tier1Answer
from serve.api.errors import ApiError
from serve.api.serving_models import ServingModels
from serve.api.turns import Answer, Turn
from serve.tenancy.accounting import Accounting
from serve.tiers.policy import TierChoice, escalate


class Tier1Service:
    """Settles tier 1's answers; ``when_unsure`` is ``tier1.when_unsure`` (answer or refuse)."""

    def __init__(self, models: ServingModels, accounting: Accounting, when_unsure: str):
        self.models, self.accounting, self.when_unsure = models, accounting, when_unsure

    def settle(self, ans: Tier1Answer, decision: RouteDecision, choice: TierChoice,
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
                raise ApiError(400, f"model {self.models.tier1_model!r} cannot answer this request: {why}",
                               param="response_format" if schema else "model", code="unsupported_by_tier1")
            return content, TierChoice(1, f"{choice.reason}; {why}", choice.escalated_from), True
        up = escalate(choice, turn.available, why, "tier1_unsure")
        if up is not None and self.models.can_answer(up.tier, turn.available):
            return None, up, False
        if content is not None and self.when_unsure == "answer":
            reason = f"{choice.reason}; {why}; no higher tier can answer, so this is tier 1's best answer"
            return content, TierChoice(1, reason, choice.escalated_from), True
        if up is None:
            raise ApiError(503, f"{why}, and no tier above tier 1 is deployed", "service_unavailable")
        return None, up, False

    async def to_answer(self, ans: Tier1Answer, content: str, turn: Turn) -> Answer:
        """The answer as priced: tier 1 read the newest message (its own word pieces); a frontier model would
        have read the whole conversation."""
        model = self.models.tier1_model
        return Answer(content, model, ans.input_tokens, await self.accounting.count(model, content),
                      result={"task": ans.task, "confidence": round(ans.confidence, 4), **ans.result},
                      baseline_prompt_tokens=await self.accounting.baseline_prompt(turn))
