"""The routing policy: from the router's proposal to the tier that answers.

Escalation only ever goes up; a tier that is not deployed hands its requests to the next one up, and
the reason says so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TierChoice:
    """The tier that answers, why, and the tier it was escalated from (if any)."""

    tier: int
    reason: str
    escalated_from: int | None = None


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


def escalate(choice: TierChoice, available: set[int], why: str) -> TierChoice | None:
    """The next available tier above ``choice.tier``, or None when there is none."""
    above = sorted(t for t in available if t > choice.tier)
    if not above:
        return None
    return TierChoice(above[0], f"{choice.reason}; {why}; escalated to tier {above[0]}", choice.tier)


def resolve_available(choice: TierChoice, available: set[int]) -> TierChoice | None:
    """``choice`` if its tier is deployed, else the next deployed tier above it (None if none)."""
    if choice.tier in available:
        return choice
    return escalate(choice, available, f"tier {choice.tier} not deployed")
