"""Tier 1's answers in the form the request asks for.

Tier 1's models give structured results (``Tier1Answer.result``); this module turns one into the assistant
message: the bare label, the entities the request asked for in its own words, the FAQ answer, or JSON,
either a plain object or one filled to the request's ``response_format`` JSON Schema and validated
against it. When the result cannot fill the schema, :func:`render` raises :class:`CannotRender` and the
gateway passes the request up instead of answering in the wrong shape.

The results it reads (only these keys):

- sentiment, classify: ``{"label": <as the request named it>, "canonical": <model label>, "scores": {label: p}}``
- entities: ``{"entities": [{"text", "type", "start", "end", "confidence"}], "types": [<canonical types asked>]}``
  (no ``types``, or ``[]``: every type)
- intent: ``{"intent": name, "top": [{"intent", "score"}]}``, or ``{"intent": name, "response": text}``
- faq: ``{"faq_id", "question", "answer", "score"}``; rule: ``{"rule": name, "answer": text}``
"""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from models.request import ParsedRequest

FORMS = ("text", "label", "list", "json")
LABEL_TASKS = ("sentiment", "classify", "intent")
# The result keys without which a task has no answer to give.
REQUIRED_KEYS = {"sentiment": ("label",), "classify": ("label",), "intent": ("intent",), "entities": ("entities",),
                 "faq": ("question", "answer"), "rule": ("answer",)}

_JSON = re.compile(r"\bjson\b", re.I)
_NO_JSON = re.compile(r"(?:\bno|\bnot|\bwithout|\bnever|n't)\s+(?:\w+\s+){0,2}json\b", re.I)
_LIST = re.compile(
    r"\bbullet(?:ed|s)?\b|\bone per line\b|\beach on (?:a |its own )?(?:new |separate )?line\b"
    r"|\b(?:as|in) a (?:bulleted |numbered )?list\b|\bnewline[- ]separated\b|\bline by line\b", re.I)
_LABEL = re.compile(
    r"\b(?:one|single)[- ]word\b|\blabel only\b|\bnothing else\b|\bno explanation\b"
    r"|\bwithout (?:any )?explanation\b"
    r"|\b(?:only|just)\s+(?:with\s+)?(?:the\s+|a\s+|one\s+)?(?:label|category|class|word|sentiment|intent)\b", re.I)

# How an entity type reads in an answer: after a name ("Berlin (location)"), and as a group's heading.
TYPE_SINGULAR = {"PER": "person", "ORG": "organization", "LOC": "location", "MISC": "other", "DATE": "date",
                 "TIME": "time", "MONEY": "money", "EMAIL": "email", "PHONE": "phone number", "URL": "URL",
                 "PRODUCT": "product", "WORK": "creative work"}
TYPE_PLURAL = {"PER": "People", "ORG": "Organizations", "LOC": "Locations", "MISC": "Other", "DATE": "Dates",
               "TIME": "Times", "MONEY": "Amounts", "EMAIL": "Emails", "PHONE": "Phone numbers", "URL": "URLs",
               "PRODUCT": "Products", "WORK": "Creative works"}
# Names a schema property or an enum value may give each type (normalised: lower case, letters and digits).
TYPE_SYNONYMS = {
    "PER": {"per", "person", "persons", "people", "personname", "personnames", "individual", "individuals", "human"},
    "ORG": {"org", "orgs", "organization", "organizations", "organisation", "organisations", "company", "companies",
            "companynames", "business", "businesses", "institution", "institutions"},
    "LOC": {"loc", "location", "locations", "place", "places", "city", "cities", "country", "countries", "gpe",
            "geo"},
    "MISC": {"misc", "miscellaneous", "other", "others"},
    "DATE": {"date", "dates"}, "TIME": {"time", "times"},
    "MONEY": {"money", "amount", "amounts", "price", "prices"},
    "EMAIL": {"email", "emails", "emailaddress", "emailaddresses"},
    "PHONE": {"phone", "phones", "phonenumber", "phonenumbers"},
    "URL": {"url", "urls", "link", "links"}, "PRODUCT": {"product", "products"},
    "WORK": {"work", "works", "creativework", "creativeworks", "title", "titles"},
}

# Property names (normalised) that carry each fact into a schema.
_LABEL_KEYS = {"label", "category", "class", "classification", "sentiment", "intent", "answer", "result",
               "prediction", "predicted", "tag", "topic", "polarity", "emotion", "tone", "mood", "verdict", "output"}
_LABEL_SUFFIXES = ("label", "category", "class", "sentiment", "intent", "polarity")
_LABEL_LIST_KEYS = {"labels", "categories", "classes", "tags", "topics", "intents", "sentiments"}
_SCORE_KEYS = {"score", "confidence", "probability", "prob", "certainty"}
_TEXT_KEYS = {"answer", "response", "reply", "text", "content", "message", "output", "result"}
_QUESTION_KEYS = {"question", "matchedquestion", "faqquestion"}
_ID_KEYS = {"id", "faqid", "entryid"}
_RULE_KEYS = {"rule", "rulename"}
_ENTITY_LIST_KEYS = {"entities", "entity", "namedentities", "items", "results", "mentions", "names", "matches",
                     "extracted", "extractions", "spans", "values", "list"}
_ENTITY_TEXT_KEYS = {"text", "name", "entity", "value", "mention", "word", "span", "surface", "string"}
_ENTITY_TYPE_KEYS = {"type", "label", "category", "kind", "entitytype", "class", "tag", "entitylabel"}
_START_KEYS = {"start", "startoffset", "begin", "startchar", "startindex"}
_END_KEYS = {"end", "endoffset", "endchar", "endindex"}


class CannotRender(Exception):
    """Tier 1's result cannot be given in the form asked (a JSON Schema it cannot fill); the message says why."""


def form_from_instruction(instruction: str) -> str:
    """The answer form an instruction asks for: ``json``, ``list`` (one item a line), ``label`` (the bare
    label) or ``text`` (no form asked). Only explicit wording counts ("as JSON", "bullet points", "one word")."""
    if _JSON.search(instruction) and not _NO_JSON.search(instruction):
        return "json"
    if _LIST.search(instruction):
        return "list"
    if _LABEL.search(instruction):
        return "label"
    return "text"


def render(task: str, result: dict, parsed: ParsedRequest | None, response_format: dict | None) -> str:
    """The assistant message for tier 1's ``result`` of ``task``, in the form the request asks for.

    ``response_format`` (as sent) wins: ``json_schema`` gives an object filled to the schema and validated
    (:class:`CannotRender` when tier 1's result cannot fill it), ``json_object`` a plain JSON object. Else
    the instruction's wording decides (:func:`form_from_instruction`), and plain text is the default: the
    label as the request named it, the entities asked for, the FAQ answer, the canned response.
    """
    if task not in REQUIRED_KEYS:
        raise ValueError(f"no answer form for task {task!r}")
    missing = [k for k in REQUIRED_KEYS[task] if k not in result]
    if missing:
        # An unsure answer may stop short of a result (no label found): there is nothing to give.
        raise CannotRender(f"tier 1's {task} result has no {', '.join(missing)}")
    kind = (response_format or {}).get("type", "text")
    if kind == "json_schema":
        schema = response_format["json_schema"]["schema"]
        return json.dumps(fill_schema(task, result, parsed, schema), ensure_ascii=False)
    form = form_from_instruction(parsed.instruction if parsed else "")
    if kind == "json_object" or form == "json":
        return json.dumps(json_answer(task, result, parsed), ensure_ascii=False)
    return text_answer(task, result, parsed, form)


# -- plain text ------------------------------------------------------------------------------------------

def _norm(value: Any) -> str:
    return re.sub(r"[^0-9a-z]", "", str(value).casefold())


def _label(task: str, result: dict, parsed: ParsedRequest | None) -> str:
    """The label as the request named it (an intent takes the spelling of a label the request listed)."""
    if task != "intent":
        return result["label"]
    name = result["intent"]
    named = [label for label in (parsed.labels if parsed else []) if _norm(label) == _norm(name)]
    return named[0] if named else name


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _asked_types(result: dict) -> list[str]:
    return list(result.get("types") or [])


def _type_name(entity_type: str, parsed: ParsedRequest | None) -> str:
    """How the request named a type ("company names"), else its plural ("Organizations")."""
    names = parsed.entity_type_names if parsed else {}
    return names.get(entity_type) or TYPE_PLURAL.get(entity_type, entity_type)


def _heading(name: str) -> str:
    return name[:1].upper() + name[1:]


def _texts_of(entities: list[dict], entity_type: str) -> list[str]:
    return _unique([e["text"] for e in entities if e["type"] == entity_type])


def _entities_text(result: dict, parsed: ParsedRequest | None, form: str) -> str:
    entities, types = result["entities"], _asked_types(result)
    if not types:
        items = _unique([f"{e['text']} ({TYPE_SINGULAR.get(e['type'], e['type'].lower())})" for e in entities])
        if not items:
            return "None found."
        return "\n".join(f"- {i}" for i in items) if form == "list" else ", ".join(items)
    groups = [(_type_name(t, parsed), _texts_of(entities, t)) for t in types]
    if not any(texts for _, texts in groups):
        return "None found."
    if len(groups) == 1:
        texts = groups[0][1]
        return "\n".join(f"- {t}" for t in texts) if form == "list" else ", ".join(texts)
    if form == "list":
        return "\n".join(f"{_heading(name)}:\n" + ("\n".join(f"- {t}" for t in texts) or "- none")
                         for name, texts in groups)
    return "\n".join(f"{_heading(name)}: {', '.join(texts) or 'none'}" for name, texts in groups)


def text_answer(task: str, result: dict, parsed: ParsedRequest | None, form: str = "text") -> str:
    """The plain-text answer (``form``: ``text``, ``label`` or ``list``; a label reads the same in each)."""
    if task == "entities":
        return _entities_text(result, parsed, form)
    if task in ("faq", "rule"):
        return result["answer"]
    if task == "intent" and "response" in result:
        return result["response"]
    return _label(task, result, parsed)


# -- plain JSON ------------------------------------------------------------------------------------------

def json_answer(task: str, result: dict, parsed: ParsedRequest | None) -> dict:
    """A JSON object for the answer: ``{"sentiment"}``, ``{"label"}``, ``{"intent"[, "response"]}``,
    ``{"answer", "question"}``, ``{"answer"}``, or the entities (grouped under the request's names for the
    types it asked for, else ``{"entities": [{"text", "type"}]}``)."""
    if task == "sentiment":
        return {"sentiment": _label(task, result, parsed)}
    if task == "classify":
        return {"label": _label(task, result, parsed)}
    if task == "intent":
        answer = {"intent": _label(task, result, parsed)}
        return answer | ({"response": result["response"]} if "response" in result else {})
    if task == "faq":
        return {"answer": result["answer"], "question": result["question"]}
    if task == "rule":
        return {"answer": result["answer"]}
    types = _asked_types(result)
    if types:
        names = parsed.entity_type_names if parsed else {}
        return {names.get(t) or TYPE_PLURAL.get(t, t).lower(): _texts_of(result["entities"], t) for t in types}
    pairs = _unique([(e["text"], TYPE_SINGULAR.get(e["type"], e["type"].lower())) for e in result["entities"]])
    return {"entities": [{"text": text, "type": kind} for text, kind in pairs]}


# -- JSON Schema -----------------------------------------------------------------------------------------

class _Unfilled(Exception):
    """A (sub)schema tier 1's result cannot fill; the message says where and why."""


_NOTHING = object()


def _schema_types(schema: dict) -> set[str]:
    """The JSON types a schema admits (inferred from properties, items or enum when ``type`` is absent)."""
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return set(declared)
    if "properties" in schema:
        return {"object"}
    if "items" in schema:
        return {"array"}
    if "enum" in schema:
        kinds = {bool: "boolean", str: "string", int: "integer", float: "number", dict: "object", list: "array"}
        return {kinds.get(type(v), "null") for v in schema["enum"]}
    return set()


def _admits(schema: dict, kind: str) -> bool:
    types = _schema_types(schema)
    return not types or kind in types or (kind == "integer" and "number" in types)


def _match_enum(candidates: list[str], enum: list) -> Any:
    """The enum value naming one of ``candidates`` (case, spaces and punctuation ignored; a unique prefix
    such as ``pos`` for ``positive`` counts), in the enum's spelling; :data:`_NOTHING` if none does."""
    values = [e for e in enum if isinstance(e, str)]
    for candidate in candidates:
        for value in values:
            if _norm(value) == _norm(candidate):
                return value
    for candidate in candidates:
        c = _norm(candidate)
        prefixed = [v for v in values if len(_norm(v)) >= 3 and len(c) >= 3
                    and (c.startswith(_norm(v)) or _norm(v).startswith(c))]
        if len(prefixed) == 1:
            return prefixed[0]
    return _NOTHING


class _SchemaFiller:
    """Fills a JSON Schema from one tier-1 result; ``placed`` says whether the main answer found a place."""

    def __init__(self, task: str, result: dict, parsed: ParsedRequest | None, root: dict):
        self.task, self.result, self.parsed, self.root = task, result, parsed, root
        self.placed = False

    # -- schema plumbing --

    def resolve(self, schema: dict) -> dict:
        """Follow local ``$ref`` pointers (``#/$defs/...``)."""
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith("#") or seen > 32:
                raise _Unfilled(f"the schema reference {ref!r} cannot be followed")
            node: Any = self.root
            for step in filter(None, ref[1:].split("/")):
                node = node.get(step.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise _Unfilled(f"the schema reference {ref!r} points nowhere")
            schema, seen = node, seen + 1
        return schema

    def value(self, name: str, schema: dict, path: str) -> Any:
        """A value for property ``name`` with ``schema``; raises :class:`_Unfilled` when there is none."""
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        for key in ("anyOf", "oneOf"):
            if key in schema:
                problems = []
                for option in schema[key]:
                    if _schema_types(self.resolve(option)) == {"null"}:
                        continue
                    try:
                        return self.attempt(name, option, path)
                    except _Unfilled as exc:
                        problems.append(str(exc))
                raise _Unfilled(problems[0] if problems else f"{path}: only null fits")
        if "properties" in schema or _schema_types(schema) == {"object"}:
            return self.object(schema, path)
        found = self.fact(_norm(name), schema, path)
        if found is _NOTHING:
            raise _Unfilled(f"tier 1 has nothing for '{path}'")
        return found

    def attempt(self, name: str, schema: dict, path: str) -> Any:
        """:meth:`value`, forgetting that the answer was placed when the attempt fails as a whole."""
        placed = self.placed
        try:
            return self.value(name, schema, path)
        except _Unfilled:
            self.placed = placed
            raise

    def object(self, schema: dict, path: str) -> dict:
        properties = schema.get("properties") or {}
        filled = {}
        for name, sub in properties.items():
            try:
                filled[name] = self.attempt(name, sub, f"{path}.{name}" if path else name)
            except _Unfilled as exc:
                if name in (schema.get("required") or []):
                    # The innermost requirement says best what is missing.
                    why = str(exc) if str(exc).startswith("the schema requires") else \
                        f"the schema requires '{path + '.' if path else ''}{name}': {exc}"
                    raise _Unfilled(why) from None
        if not filled:
            raise _Unfilled(f"tier 1 has nothing for any property of '{path or 'the answer'}'")
        return filled

    # -- facts by task --

    def fact(self, key: str, schema: dict, path: str) -> Any:
        if self.task == "entities":
            return self.entities_fact(key, schema, path)
        if self.task in LABEL_TASKS:
            return self.label_fact(key, schema)
        return self.answer_fact(key, schema)

    def _score(self) -> float | None:
        if self.task == "intent":
            top = self.result.get("top") or []
            return top[0]["score"] if top and top[0]["intent"] == self.result["intent"] else None
        scores = self.result.get("scores") or {}
        return scores.get(self.result.get("canonical", self.result["label"]))

    def label_fact(self, key: str, schema: dict) -> Any:
        label = _label(self.task, self.result, self.parsed)
        candidates = [label, self.result.get("canonical") or self.result.get("intent") or label]
        response = self.result.get("response") if self.task == "intent" else None
        if response is not None and key in _TEXT_KEYS and "enum" not in schema and _admits(schema, "string"):
            # A canned response is the answer; the intent's name goes to intent-like properties.
            self.placed = True
            return response
        if "enum" in schema:
            value = _match_enum(candidates, schema["enum"])
            if value is not _NOTHING:
                self.placed = True
            return value
        if _admits(schema, "string") and (key in _LABEL_KEYS or key.endswith(_LABEL_SUFFIXES)):
            self.placed = True
            return label
        if _schema_types(schema) == {"array"} and key in _LABEL_LIST_KEYS:
            items = self.resolve(schema.get("items") or {})
            value = _match_enum(candidates, items["enum"]) if "enum" in items else label
            if value is not _NOTHING and _admits(items, "string"):
                self.placed = True
                return [value]
        if key in _SCORE_KEYS and _admits(schema, "number") and "integer" not in _schema_types(schema):
            score = self._score()
            return _NOTHING if score is None else score
        return _NOTHING

    def answer_fact(self, key: str, schema: dict) -> Any:
        if not _admits(schema, "string") and key not in _SCORE_KEYS:
            return _NOTHING
        if key in _TEXT_KEYS and "enum" not in schema:
            self.placed = True
            return self.result["answer"]
        found = None
        if self.task == "faq":
            if key in _QUESTION_KEYS:
                found = self.result["question"]
            elif key in _ID_KEYS:
                found = self.result.get("faq_id")
            elif key in _SCORE_KEYS and _admits(schema, "number") and "integer" not in _schema_types(schema):
                found = self.result.get("score")
        elif key in _RULE_KEYS:
            found = self.result.get("rule")
        return _NOTHING if found is None else found

    def _type_of_key(self, key: str) -> str | None:
        """The entity type a property name stands for ("companies", or how the request named it)."""
        named = {_norm(name): t for t, name in (self.parsed.entity_type_names if self.parsed else {}).items()}
        if key in named:
            return named[key]
        for entity_type, synonyms in TYPE_SYNONYMS.items():
            if key in synonyms:
                return entity_type
        return None

    def entities_fact(self, key: str, schema: dict, path: str) -> Any:
        if _schema_types(schema) != {"array"}:
            return _NOTHING
        entity_type = self._type_of_key(key)
        asked = _asked_types(self.result)
        if entity_type is not None:
            entities = [e for e in self.result["entities"] if e["type"] == entity_type]
        elif key in _ENTITY_LIST_KEYS:
            entities = [e for e in self.result["entities"] if not asked or e["type"] in asked]
        else:
            return _NOTHING
        items = self.resolve(schema.get("items") or {})
        if _schema_types(items) == {"string"} or ("enum" not in items and _schema_types(items) == set()):
            self.placed = True
            return _unique([e["text"] for e in entities])
        if "properties" in items or _schema_types(items) == {"object"}:
            filled = [item for item in (self.entity_object(e, items, f"{path}[]") for e in entities)
                      if item is not None]
            self.placed = True
            return filled
        return _NOTHING

    def entity_object(self, entity: dict, schema: dict, path: str) -> dict | None:
        """One entity as an item of the schema; None when its type has no value in the item's enum."""
        out = {}
        for name, sub in (schema.get("properties") or {}).items():
            sub, key = self.resolve(sub), _norm(name)
            value: Any = _NOTHING
            if key in _ENTITY_TEXT_KEYS and _admits(sub, "string"):
                value = entity["text"]
            elif key in _ENTITY_TYPE_KEYS:
                value = self.entity_type_value(entity["type"], sub)
                if value is _NOTHING and "enum" in sub:
                    # The schema lists the types it wants; this entity is of another one.
                    return None
            elif key in _START_KEYS and _admits(sub, "integer") and "start" in entity:
                value = entity["start"]
            elif key in _END_KEYS and _admits(sub, "integer") and "end" in entity:
                value = entity["end"]
            elif key in _SCORE_KEYS and _admits(sub, "number") and "confidence" in entity:
                value = entity["confidence"]
            if value is not _NOTHING:
                out[name] = value
            elif name in (schema.get("required") or []):
                raise _Unfilled(f"the schema requires '{path}.{name}', which tier 1 does not know")
        if entity["text"] not in out.values():
            raise _Unfilled(f"no property of '{path}' can carry the entity's text")
        return out

    def entity_type_value(self, entity_type: str, schema: dict) -> Any:
        names = self.parsed.entity_type_names if self.parsed else {}
        candidates = [entity_type, TYPE_SINGULAR.get(entity_type, entity_type), *TYPE_SYNONYMS.get(entity_type, ())]
        if entity_type in names:
            candidates.insert(1, names[entity_type])
        if "enum" in schema:
            return _match_enum(candidates, schema["enum"])
        return TYPE_SINGULAR.get(entity_type, entity_type.lower()) if _admits(schema, "string") else _NOTHING


def fill_schema(task: str, result: dict, parsed: ParsedRequest | None, schema: dict) -> dict:
    """An object that carries tier 1's answer in the properties of ``schema`` and validates against it.

    The label goes to an enum that contains it (matched ignoring case, given in the enum's spelling) or to
    a string property named like label, category, class, sentiment, intent or answer; entities to an
    array property of strings or of objects with text and type properties (or one array per type, named
    after it); FAQ and rule answers to an answer-like string property. Properties tier 1 knows nothing
    about are left out; a required one, a schema with no place for the answer, or a result that does not
    validate raises :class:`CannotRender`.
    """
    filler = _SchemaFiller(task, result, parsed, schema)
    try:
        root = filler.resolve(schema)
        if not _admits(root, "object"):
            raise _Unfilled("the schema's root is not an object")
        if not root.get("properties") and not any(k in root for k in ("anyOf", "oneOf")):
            # A free-form object: the plain JSON answer is as good as any.
            answer = json_answer(task, result, parsed)
            filler.placed = True
        else:
            answer = filler.value("", root, "")
    except _Unfilled as exc:
        raise CannotRender(str(exc)) from None
    if not filler.placed:
        raise CannotRender(f"no property of the schema can carry tier 1's {task} answer")
    try:
        Draft202012Validator(schema).validate(answer)
    except ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the answer"
        raise CannotRender(f"tier 1's answer does not validate against the schema at {where}: {exc.message}") from None
    return answer
