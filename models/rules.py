"""Rule engine: configured regular expressions with canned answers, checked before any model."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class RuleHit:
    """The rule that matched and the answer it gives."""

    name: str
    answer: str


class RuleEngine:
    """First matching rule wins; rules come from ``tier1.rules`` (name, pattern, answer, ignore_case)."""

    def __init__(self, rules: list) -> None:
        self._rules = [
            (r.name, re.compile(r.pattern, re.IGNORECASE if r.ignore_case else 0), r.answer) for r in rules
        ]

    def match(self, text: str) -> RuleHit | None:
        """The first rule whose pattern matches ``text``, if any."""
        for name, pattern, answer in self._rules:
            if pattern.search(text):
                return RuleHit(name, answer)
        return None
