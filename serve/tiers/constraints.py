"""What a request needs that tier 1 cannot give: the constraints checked before tier 1 may answer.

Tier 1 gives text (or JSON rendered from its results: ``models/answer_format.py``) about English-like
text. A request that offers tools, sends images, audio or files, asks for token logprobs, or is written in
a language tier 1's models do not read goes to a higher tier instead, whatever the router proposed.
"""

from __future__ import annotations

from models.language import unsupported_reason
from models.request import RequestView


def tier1_blocker(view: RequestView, languages: set[str] | frozenset[str], payload: str = "") -> str | None:
    """Why tier 1 may not answer the request ``view`` describes, or None when it may.

    ``languages`` are the ISO 639-1 codes tier 1's models read (``tier1.languages``). The checks run
    cheapest first; the language check reads the payload the router found (an English instruction around
    a French review is still French to the sentiment head), the newest user message and the system prompt.
    """
    if view.has_tools:
        return "the request offers tools (or continues a tool call), and tier 1 cannot call tools"
    if view.non_text_parts:
        return f"the request carries {', '.join(view.non_text_parts)} content, and tier 1 reads only text"
    if view.wants_logprobs:
        return "the request asks for logprobs, and tier 1 does not produce tokens"
    for text in (payload, view.user, view.system):
        reason = unsupported_reason(text, languages) if text else None
        if reason:
            return reason
    return None


def tier2_blocker(view: RequestView) -> str | None:
    """Why tier 2 may not answer the request, or None when it may: its models read and write text, and
    the gateway passes neither tool calls nor token log-probabilities through from them."""
    if view.has_tools:
        return "the request offers tools (or continues a tool call), which tier 2 does not pass through"
    if view.non_text_parts:
        return f"the request carries {', '.join(view.non_text_parts)} content, and tier 2's models read only text"
    if view.wants_logprobs:
        return "the request asks for logprobs, which tier 2 does not pass through"
    return None
