"""A chat request as tier 1 reads it: the instruction, the payload it applies to, the labels or entity types
it names, and the constraints any answer must meet.

:class:`RequestView` is what the gateway hands the router (plain data, no FastAPI); :class:`ParsedRequest`
is what the router's reading heads make of it (``models/reader.py``), and what tier 1 answers from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Canonical entity types: CoNLL-2003's four, WNUT-17's product and creative work, and the pattern types.
ENTITY_TYPES = ("PER", "ORG", "LOC", "MISC", "DATE", "TIME", "MONEY", "EMAIL", "PHONE", "URL", "PRODUCT", "WORK")


def reader_text(system: str, user: str) -> str:
    """The one text the encoder reads for a request: the user message alone when there is no system
    prompt, else the system prompt, a blank line and the user message (the prompt may hold the instruction)."""
    return f"{system}\n\n{user}" if system else user


@dataclass(frozen=True)
class RequestView:
    """The parts of a chat request that decide whether and how tier 1 may answer it.

    ``system`` is the system (or developer) prompt, ``user`` the newest user message; ``context`` the
    earlier turns as one text. The remaining fields are the request's constraints.
    """

    user: str
    system: str = ""
    context: str = ""
    has_tools: bool = False
    non_text_parts: tuple[str, ...] = ()
    response_format: dict | None = None
    wants_logprobs: bool = False


@dataclass
class ParsedRequest:
    """What the request asks for, read by the router's heads from one encoder pass.

    ``payload`` is the text the task applies to (the whole message when there is no instruction);
    ``labels`` the label set the request names, as written; ``entity_types`` the canonical types asked for
    (empty: every named entity) and ``entity_type_names`` how the request named each one.
    """

    task: str
    payload: str
    instruction: str = ""
    labels: list[str] = field(default_factory=list)
    entity_types: list[str] = field(default_factory=list)
    entity_type_names: dict[str, str] = field(default_factory=dict)
    confidence: float = 1.0

    @property
    def has_instruction(self) -> bool:
        """Whether the request wraps its payload in an instruction (else the message is the payload)."""
        return bool(self.instruction.strip())
