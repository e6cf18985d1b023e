"""The routing policy: from the router's proposal to the tier that answers.

Escalation only ever goes up; a tier that is not deployed hands its requests to the next one up, and
the reason says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class TierChoice:
    """The tier that answers, why, and the tier it was escalated from (if any)."""

    tier: int
    reason: str
    escalated_from: int | None = None
    # Why the request left the tier it was first given (a metrics label): e.g. tier1_unsure, tier2_timeout.
    cause: str | None = None


def choose_tier(proposed_tier: int, confidence: float, reason: str, *, previous_tier: int | None = None,
                forced_tier: int | None = None, sticky_max_confidence: float = 0.9) -> TierChoice:
    """Apply a forced model and conversation stickiness to the router's proposal.

    A conversation that needed a higher tier stays there (hysteresis) unless the router is more than
    ``sticky_max_confidence`` sure that a lower tier suffices: follow-ups such as "and why?" look simple
    on their own but need the context the bigger model built.
    """
    if forced_tier is not None:
        return TierChoice(forced_tier, f"model chosen by the client (tier {forced_tier})")
    if previous_tier is not None and previous_tier > proposed_tier and confidence <= sticky_max_confidence:
        return TierChoice(previous_tier, f"sticky: conversation was at tier {previous_tier}; router proposed "
                                         f"tier {proposed_tier} ({reason}) with confidence {confidence:.2f}")
    return TierChoice(proposed_tier, reason)


def escalate(choice: TierChoice, available: set[int], why: str, cause: str) -> TierChoice | None:
    """The next available tier above ``choice.tier``, or None when there is none."""
    above = sorted(t for t in available if t > choice.tier)
    if not above:
        return None
    return TierChoice(above[0], f"{choice.reason}; {why}; escalated to tier {above[0]}", choice.tier, cause)


def resolve_available(choice: TierChoice, available: set[int], absent: dict[int, str] | None = None) -> TierChoice | None:
    """``choice`` if its tier is deployed, else the next deployed tier above it (None if none); ``absent``
    says why a tier is not deployed, when it was configured."""
    if choice.tier in available:
        return choice
    why = (absent or {}).get(choice.tier, f"tier {choice.tier} not deployed")
    return escalate(choice, available, why, f"tier{choice.tier}_not_deployed")


def rank_tier2(targets: list, task: str, load: Callable[[object], float], previous: str | None = None,
               quality: Callable[[object], float | None] = lambda target: None,
               threshold: float = 0.0) -> tuple[list, str]:
    """Tier-2 targets to try for a ``task``, best first, and why the first was picked.

    Task fit comes first: targets that list the task, then general ones (no task list); a target whose
    list lacks the task is not a candidate, nor is one whose predicted ``quality`` (the calibrated
    probability that it answers well enough; None: not predicted) is below ``threshold``. Within a
    group the least loaded goes first (in steps of 10%, so noise does not reorder them), then the
    conversation's previous model (its prefix cache is warm), then the configured order (cheapest first).
    An empty list means no tier-2 model fits the task.
    """
    def group(t) -> int | None:
        return 0 if task in t.tasks else 1 if not t.tasks else None

    fitting = [t for t in targets if group(t) is not None]
    if not fitting:
        return [], f"no tier-2 model is configured for task '{task}'"
    candidates = [t for t in fitting if quality(t) is None or quality(t) >= threshold]
    if not candidates:
        best = max(fitting, key=quality)
        return [], (f"no tier-2 model is predicted to answer well enough (best {best.served_id}: "
                    f"{quality(best):.2f} < threshold {threshold:.2f})")
    order = {id(t): i for i, t in enumerate(targets)}
    candidates.sort(key=lambda t: (group(t), round(load(t), 1), t.served_id != previous, order[id(t)]))
    best = candidates[0]
    fit = f"lists task '{task}'" if group(best) == 0 else f"general model (none lists task '{task}')"
    predicted = "" if quality(best) is None else f", predicted quality {quality(best):.2f}"
    others = ", ".join(f"{t.served_id} {load(t):.2f}" for t in candidates[1:])
    reason = (f"tier-2 model {best.served_id}: {fit}{predicted}, load {load(best):.2f}"
              + (f" (others: {others})" if others else ""))
    return candidates, reason
