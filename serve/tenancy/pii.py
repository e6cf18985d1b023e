"""PII detection over whole conversations, and reversible redaction with placeholders.

A tenant's policy may let a request that carries personal data go to the external tier-3 provider only with
that data replaced: each value becomes a placeholder such as ``[EMAIL_1]`` before the request leaves, and
the placeholders in the answer are put back before the client gets it, streamed answers included. The
provider never sees the values; the client never sees the placeholders.

Person names come from the router's CoNLL tagger (:meth:`models.router.Router.pii_entities`, over whole
texts however long); everything else is regular enough for patterns, each with the check that cuts its
false positives: a Luhn checksum for card numbers, the ISO 13616 mod-97 check for IBANs, a cue word for
account numbers, the shape of a phone number (not a date, an IP address or an order number), and a house
number plus a street suffix for street addresses. A place name alone is never redacted: in "the capital of
France" the place is what the question is about.

A request is redacted in four steps: :func:`message_texts` lists its texts in a fixed order, the router tags
them, :func:`conversation_pii` finds the PII of each (a name found in one text is found in all of them), and
a :class:`Redactor`, built per request, replaces the values (:meth:`Redactor.redact_messages`), so one value
has one placeholder across all the request's messages and the mapping ends with the request. The answer goes
back through :meth:`Redactor.restore_message`, or a :class:`StreamRestorer` per streamed text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from models.entities import PATTERNS, Entity
from models.router import merge_overlapping

_EMAIL, _CARD, _PHONE = (dict(PATTERNS)[kind] for kind in ("EMAIL", "CARD", "PHONE"))

# A digit run continuing past a card-number match: the match is part of a longer number, not a card.
_NUMBER_BEFORE = re.compile(r"\d[ -]?$")
_NUMBER_AFTER = re.compile(r"[ -]?\d")

_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_IBAN_LENGTHS = range(15, 35)
_ACCOUNT = re.compile(r"\b(?:(?:bank\s+)?account|acct|a/c|routing|aba|sort\s+code)(?:\s+(?:number|num|no|#))?\.?"
                      r"\s*(?:is\s+|:\s*|#\s*)?(\d(?:[ -]?\d){5,19})(?!\d)", re.I)

# Words that make a number a reference rather than a phone number ("order 555-123-4567").
_REFERENCE_CUE = re.compile(r"\b(?:order|invoice|ticket|ref|reference|tracking|confirmation|booking|case|po|serial|"
                            r"sku|isbn|id)\b\W*(?:(?:number|num|no|id)\b\W*)?(?:is\W+)?$", re.I)
# Words that make a bare digit run a phone number ("call me on 4155550100").
_PHONE_CUE = re.compile(r"\b(?:phone|tel|telephone|mobile|cell|call|fax|whatsapp|sms|text|number|reach)\b\W*"
                        r"(?:\w+\W+){0,3}$", re.I)
_DATE_SHAPE = re.compile(r"(\d{4})([-./])(\d{1,2})\2(\d{1,2})|(\d{1,2})([-./])(\d{1,2})\6(\d{4})")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_CUE_REACH = 40
_PHONE_DIGITS = range(7, 16)  # E.164 allows at most 15 digits; 7 is a local number without area code

_STREET_SUFFIX = (r"Street|Avenue|Road|Lane|Boulevard|Drive|Court|Place|Terrace|Way|Circle|Parkway|Highway|Square|"
                  r"Trail|Crescent|Close|Row|Alley|Plaza")
# An abbreviation takes its dot; after a full word a dot ends the sentence and stays out of the span.
_STREET_ABBREVIATION = r"St|Ave|Rd|Ln|Blvd|Dr|Ct|Pl|Ter|Cir|Pkwy|Hwy|Sq|Trl"
_CAPITALISED = r"[A-Z][A-Za-z'.-]*(?!\w)"
# Street-name words are capitalised (or ordinals, "5th"): "2 ways to cross the street" is no address.
_ADDRESS = re.compile(
    rf"\b\d{{1,6}}[A-Za-z]?(?:-\d{{1,6}})?\s+(?:(?:{_CAPITALISED}|\d+(?:st|nd|rd|th))\s+){{1,4}}"
    rf"(?:(?i:{_STREET_SUFFIX})\b|(?i:{_STREET_ABBREVIATION})\b\.?)"
    r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b)?"
    r"(?:,?\s+(?:(?i:apt|apartment|suite|ste|unit|floor|fl|room|rm)\b\.?\s*#?\s*|#\s*)\w+)?"
    rf"(?:,\s+{_CAPITALISED}(?:\s+{_CAPITALISED}){{0,2}})?"
    r"(?:,?\s+[A-Z]{2}\b)?"
    r"(?:,?\s+(?:\d{5}(?:-\d{4})?|[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2})\b)?"
)

# Placeholder names by entity type; the tagger's PER reads as PERSON to the model that sees the placeholder.
PLACEHOLDER_LABELS = {"PER": "PERSON"}
_PLACEHOLDER = re.compile(r"\[[A-Z]+_\d+\]")


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum that every payment card number carries."""
    total = 0
    for i, digit in enumerate(map(int, reversed(digits))):
        if i % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """Whether ``iban`` (spaces allowed) has an IBAN's length and passes its ISO 13616 mod-97 check."""
    compact = iban.replace(" ", "")
    if len(compact) not in _IBAN_LENGTHS or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def emails(text: str) -> Iterator[tuple[int, int]]:
    """Spans of e-mail addresses."""
    for m in _EMAIL.finditer(text):
        yield m.span()


def cards(text: str) -> Iterator[tuple[int, int]]:
    """Spans of payment card numbers: 13 to 16 digits, spaces or dashes between, that pass the Luhn check."""
    for m in _CARD.finditer(text):
        start, end = m.start(), m.start() + len(m.group().rstrip(" -"))
        if _NUMBER_BEFORE.search(text, 0, start) or _NUMBER_AFTER.match(text, end):
            continue
        if luhn_valid(re.sub(r"\D", "", text[start:end])):
            yield start, end


def accounts(text: str) -> Iterator[tuple[int, int]]:
    """Spans of bank account numbers: IBANs that pass the mod-97 check, and 6 to 20 digits after a cue
    ("account number", "acct #", "routing", "sort code"); the cue itself stays, the number goes."""
    for m in _IBAN.finditer(text):
        # The pattern may run on into an upper-case word after the IBAN: drop trailing groups until it checks.
        start, end = m.span()
        while end - start >= _IBAN_LENGTHS.start and not iban_valid(text[start:end]):
            end = text.rfind(" ", start, end)
        if end - start >= _IBAN_LENGTHS.start:
            yield start, end
    for m in _ACCOUNT.finditer(text):
        yield m.span(1)


def _looks_like_date(number: str) -> bool:
    """Whether a phone-shaped number reads as a date (2024-01-15, 15.01.2024, 01/15/2024)."""
    m = _DATE_SHAPE.fullmatch(number)
    if not m:
        return False
    if m.group(1):
        month, day = int(m.group(3)), int(m.group(4))
        return 1 <= month <= 12 and 1 <= day <= 31
    first, second = int(m.group(5)), int(m.group(7))
    return 1 <= min(first, second) <= 12 and max(first, second) <= 31


def phones(text: str) -> Iterator[tuple[int, int]]:
    """Spans of phone numbers: 7 to 15 digits written like a phone number (a leading +, or groups split by
    spaces, dots, dashes or brackets), or a bare digit run after a phone cue ("call", "mobile"). A date, an
    IPv4 address or a number after a reference cue ("order", "invoice", "ticket") is not one."""
    for m in _PHONE.finditer(text):
        start, end = m.span()
        if start > 0 and text[start - 1] == "(":
            start -= 1
        number = text[start:end]
        if sum(c.isdigit() for c in number) not in _PHONE_DIGITS:
            continue
        if _looks_like_date(number) or _IPV4.fullmatch(number):
            continue
        before = text[max(0, start - _CUE_REACH):start]
        if _REFERENCE_CUE.search(before):
            continue
        if number.startswith("+") or not number.isdigit() or _PHONE_CUE.search(before):
            yield start, end


def addresses(text: str) -> Iterator[tuple[int, int]]:
    """Spans of street addresses: a house number, a capitalised street name and a street suffix (Street,
    Ave, Rd, ...), with the unit, city, state and ZIP code or postcode that follow it."""
    for m in _ADDRESS.finditer(text):
        yield m.span()


# Earlier detectors win overlaps: an e-mail holds digits, an account cue beats a bare card-shaped number,
# and a phone number is the loosest shape of all.
DETECTORS: tuple[tuple[str, Callable[[str], Iterator[tuple[int, int]]]], ...] = (
    ("EMAIL", emails), ("ACCOUNT", accounts), ("CARD", cards), ("ADDRESS", addresses), ("PHONE", phones),
)


def _overlaps(start: int, end: int, found: list[Entity]) -> bool:
    return any(start < e.end and e.start < end for e in found)


def find_pii(text: str, names: list[Entity]) -> list[Entity]:
    """The PII in ``text``: what the detectors find, plus the person names (PER) in ``names`` (the text's
    entry of :meth:`models.router.Router.pii_entities`; overlapping names are joined) that no detector's
    span overlaps; sorted, none overlapping.

    Raises:
        ValueError: a name's offsets do not hold its text in ``text`` (names tagged on another text).
    """
    found: list[Entity] = []
    for kind, detect in DETECTORS:
        for start, end in detect(text):
            if not _overlaps(start, end, found):
                found.append(Entity(text[start:end], kind, start, end, 1.0))
    for name in names:
        if text[name.start:name.end] != name.text:
            raise ValueError(f"name {name.text!r} at {name.start}:{name.end} is not in the text "
                             f"(found {text[name.start:name.end]!r}): pass the names tagged on this text")
    people = merge_overlapping(text, [name for name in names if name.type == "PER"])
    return sorted(found + [e for e in people if not _overlaps(e.start, e.end, found)], key=lambda e: e.start)


def conversation_pii(texts: list[str], names_per_text: list[list[Entity]]) -> list[list[Entity]]:
    """:func:`find_pii` over each of a request's texts, each text's names joined by every whole-word
    occurrence of a name the tagger found in any of them: a tagger that reads "Maria Garcia" in one message
    but misses her, or reads only "Maria", in another must not let the value through there.

    Raises:
        ValueError: not one name list per text, or a name not in its text.
    """
    if len(names_per_text) != len(texts):
        raise ValueError(f"{len(names_per_text)} name lists for {len(texts)} texts: pass one per text, in order")
    confidence: dict[str, float] = {}
    for names in names_per_text:
        for name in names:
            if name.type == "PER":
                confidence[name.text] = max(confidence.get(name.text, 0.0), name.confidence)
    if not confidence:
        return [find_pii(text, names) for text, names in zip(texts, names_per_text)]
    # Longest first, so the alternation prefers "Maria Garcia" to "Maria" where both match.
    known = sorted(confidence, key=len, reverse=True)
    occurrence = re.compile(rf"(?<!\w)(?:{'|'.join(map(re.escape, known))})(?!\w)")
    return [find_pii(text, names + [Entity(m.group(), "PER", m.start(), m.end(), confidence[m.group()])
                                     for m in occurrence.finditer(text)])
            for text, names in zip(texts, names_per_text)]


def _label(kind: str) -> str:
    """The placeholder name for an entity type.

    Raises:
        ValueError: the type does not make a placeholder name (upper-case letters only).
    """
    label = PLACEHOLDER_LABELS.get(kind, kind)
    if not re.fullmatch(r"[A-Z]+", label):
        raise ValueError(f"entity type {kind!r} makes no placeholder name: it must be upper-case letters")
    return label


def _map_texts(messages: list[dict], fn: Callable[[str], str]) -> list[dict]:
    """Copies of ``messages`` with each text replaced by ``fn(text)``, visited in a fixed order: per message,
    its content (a string, or its text and refusal parts), its refusal, its tool calls' arguments (a custom
    tool call's input), its legacy function call's arguments. A tool result is a message's content."""
    out = []
    for message in messages:
        message = dict(message)
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = fn(content)
        elif isinstance(content, list):
            message["content"] = [_map_part(part, fn) for part in content]
        if isinstance(message.get("refusal"), str):
            message["refusal"] = fn(message["refusal"])
        if message.get("tool_calls"):
            message["tool_calls"] = [_map_call(call, fn) for call in message["tool_calls"]]
        if message.get("function_call"):
            message["function_call"] = _map_field(message["function_call"], "arguments", fn)
        out.append(message)
    return out


def _map_part(part: dict, fn: Callable[[str], str]) -> dict:
    kind = part.get("type")
    return _map_field(part, kind, fn) if kind in ("text", "refusal") else part


def _map_call(call: dict, fn: Callable[[str], str]) -> dict:
    if isinstance(call.get("function"), dict):
        return {**call, "function": _map_field(call["function"], "arguments", fn)}
    if isinstance(call.get("custom"), dict):
        return {**call, "custom": _map_field(call["custom"], "input", fn)}
    return call


def _map_field(item: dict, key: str, fn: Callable[[str], str]) -> dict:
    return {**item, key: fn(item[key])} if isinstance(item.get(key), str) else item


def message_texts(messages: list[dict]) -> list[str]:
    """The texts of OpenAI-format ``messages``, in the order :meth:`Redactor.redact_messages` takes their
    spans in: tag these, and pass one span list per text back."""
    texts: list[str] = []

    def collect(text: str) -> str:
        texts.append(text)
        return text

    _map_texts(messages, collect)
    return texts


class Redactor:
    """One request's placeholders: replaces PII values by ``[TYPE_n]`` placeholders (numbered per type, one
    value one placeholder across all the request's messages) and puts the values back in the answer.

    A placeholder the redactor never issued (a model inventing ``[EMAIL_9]``) is left as it is.
    """

    def __init__(self):
        self._placeholders: dict[str, str] = {}
        self._by_value: dict[str, str] = {}
        self._issued: Counter[str] = Counter()

    @property
    def placeholders(self) -> Mapping[str, str]:
        """Each issued placeholder and the value it stands for (read-only)."""
        return MappingProxyType(self._placeholders)

    @property
    def redacted(self) -> bool:
        """Whether any value has been replaced."""
        return bool(self._placeholders)

    def placeholder(self, value: str, kind: str) -> str:
        """The placeholder for ``value``: the one it already has, else a new one of ``kind`` (an entity type).

        Raises:
            ValueError: ``kind`` does not make a placeholder name (upper-case letters only).
        """
        if value in self._by_value:
            return self._by_value[value]
        label = _label(kind)
        self._issued[label] += 1
        placeholder = f"[{label}_{self._issued[label]}]"
        self._by_value[value], self._placeholders[placeholder] = placeholder, value
        return placeholder

    def redact(self, text: str, spans: list[Entity]) -> str:
        """``text`` with each span's value replaced by its placeholder.

        Raises:
            ValueError: a span is empty, outside the text, or overlaps another.
        """
        spans = sorted(spans, key=lambda e: e.start)
        # Every span is checked before any placeholder is issued, so a refused text leaves no trace.
        position = 0
        for span in spans:
            _label(span.type)
            if not position <= span.start < span.end <= len(text):
                raise ValueError(f"{span.type} span {span.start}:{span.end} is empty, outside the text (length "
                                 f"{len(text)}) or overlaps the span before it (ending at {position})")
            position = span.end
        pieces, position = [], 0
        for span in spans:
            pieces += [text[position:span.start], self.placeholder(text[span.start:span.end], span.type)]
            position = span.end
        pieces.append(text[position:])
        return "".join(pieces)

    def redact_messages(self, messages: list[dict], spans_per_text: list[list[Entity]]) -> list[dict]:
        """Copies of OpenAI-format ``messages`` with their texts redacted; ``spans_per_text`` holds one span
        list per text of :func:`message_texts`, in its order.

        Raises:
            ValueError: the number of span lists is not the number of texts, or a span is invalid.
        """
        count = len(message_texts(messages))
        if len(spans_per_text) != count:
            raise ValueError(f"{len(spans_per_text)} span lists for {count} texts: pass one per text of "
                             "message_texts(messages), in its order")
        spans = iter(spans_per_text)
        return _map_texts(messages, lambda text: self.redact(text, next(spans)))

    def restore(self, text: str) -> str:
        """``text`` with each issued placeholder replaced by its value."""
        return _PLACEHOLDER.sub(lambda m: self._placeholders.get(m.group(), m.group()), text)

    def restore_message(self, message: dict) -> dict:
        """A copy of an answer's message with its values back: content, refusal and tool-call arguments."""
        (restored,) = _map_texts([message], self.restore)
        return restored


class StreamRestorer:
    """Restores a stream of text deltas (one per stream: a choice's content, one tool call's arguments).

    A placeholder may arrive split across deltas ("[EM" + "AIL_1] hi"), so the trailing fragment that could
    still grow into an issued placeholder is held back until it can no longer; anything else, ordinary
    brackets included, goes out at once.
    """

    def __init__(self, redactor: Redactor):
        self.redactor = redactor
        self._held = ""

    def feed(self, delta: str) -> str:
        """The restored text that ``delta`` completes (possibly empty)."""
        text = self._held + delta
        # Placeholders hold no "[" inside, so only a fragment from the last "[" can still become one.
        start = text.rfind("[")
        fragment = text[start:] if start >= 0 else ""
        if fragment and any(p.startswith(fragment) and p != fragment for p in self.redactor.placeholders):
            self._held, text = fragment, text[:start]
        else:
            self._held = ""
        return self.redactor.restore(text)

    def flush(self) -> str:
        """What is held back at the end of the stream: a fragment that never became a placeholder."""
        held, self._held = self._held, ""
        return held


@dataclass(frozen=True)
class ConversationPii:
    """What :class:`PiiScanner` found: the spans of each text of :func:`message_texts`, in its order."""

    spans: list[list[Entity]]

    @property
    def any(self) -> bool:
        """Whether the conversation carries any PII."""
        return any(self.spans)

    @property
    def types(self) -> list[str]:
        """The kinds found, as placeholders name them (PERSON, EMAIL, ...), sorted."""
        return sorted({PLACEHOLDER_LABELS.get(e.type, e.type) for spans in self.spans for e in spans})


class PiiScanner:
    """Finds the PII in a whole conversation: the patterns here, and person names from the router's tagger
    (in-process, or on the Router deployment: ``router.pii_entities``)."""

    def __init__(self, router):
        self.router = router

    async def scan(self, messages: list[dict]) -> ConversationPii:
        """The PII of every text of ``messages`` (OpenAI format)."""
        texts = message_texts(messages)
        names = await self.router.pii_entities(texts) if texts else []
        return ConversationPii(conversation_pii(texts, names))
