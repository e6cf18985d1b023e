"""Answer forms: the instruction's form, plain text per task, plain JSON, and JSON filled to a schema."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from models.answer_format import CannotRender, fill_schema, form_from_instruction, render
from models.request import ParsedRequest

SENTIMENT = {"label": "Positive", "canonical": "positive", "scores": {"positive": 0.93, "negative": 0.07}}
NEUTRAL = {"label": "neutral", "canonical": "neutral", "scores": {"positive": 0.1, "neutral": 0.8, "negative": 0.1}}
CLASSIFY = {"label": "billing", "canonical": "billing", "scores": {"billing": 0.81, "shipping": 0.19}}
ENTITIES = {"entities": [
    {"text": "Angela Merkel", "type": "PER", "start": 0, "end": 13, "confidence": 0.97},
    {"text": "Berlin", "type": "LOC", "start": 22, "end": 28, "confidence": 0.91},
    {"text": "Siemens", "type": "ORG", "start": 33, "end": 40, "confidence": 0.88},
    {"text": "Berlin", "type": "LOC", "start": 50, "end": 56, "confidence": 0.9},
], "types": []}
COMPANIES = {"entities": [{"text": "Nvidia", "type": "ORG", "start": 0, "end": 6, "confidence": 0.9},
                          {"text": "Samsung", "type": "ORG", "start": 11, "end": 18, "confidence": 0.9}],
             "types": ["ORG"]}
INTENT = {"intent": "book_flight",
          "top": [{"intent": "book_flight", "score": 0.91}, {"intent": "book_hotel", "score": 0.05}]}
INTENT_RESPONSE = {"intent": "are_you_a_bot", "response": "Yes, I'm an automated assistant."}
FAQ = {"faq_id": "returns", "question": "What is your return policy?", "answer": "30 days, free label.", "score": 0.91}
RULE = {"rule": "greeting", "answer": "Hello! How can I help you today?"}


def parsed(task="sentiment", instruction="", **kw) -> ParsedRequest:
    return ParsedRequest(task, "payload", instruction=instruction, **kw)


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def filled(task, result, schema, p=None) -> dict:
    out = json.loads(render(task, result, p, schema_format(schema)))
    Draft202012Validator(schema).validate(out)
    return out


# -- the instruction's form ------------------------------------------------------------------------------

@pytest.mark.parametrize("instruction,form", [
    ("Return the sentiment as JSON.", "json"),
    ("Answer in json format", "json"),
    ("Give me a JSON object with the label", "json"),
    ("Don't use JSON, just tell me", "text"),
    ("List the companies as bullet points", "list"),
    ("Names, one per line", "list"),
    ("Put them in a list", "list"),
    ("Answer with one word: positive, negative or neutral", "label"),
    ("Reply with only the label", "label"),
    ("Just the category, nothing else", "label"),
    ("What is the sentiment of this review?", "text"),
    ("Extract the people", "text"),
    ("", "text"),
])
def test_form_from_instruction(instruction, form):
    assert form_from_instruction(instruction) == form


# -- plain text ------------------------------------------------------------------------------------------

def test_label_answers_are_the_label_as_named():
    assert render("sentiment", SENTIMENT, None, None) == "Positive"
    assert render("sentiment", NEUTRAL, parsed(instruction="One word."), None) == "neutral"
    assert render("classify", CLASSIFY, parsed("classify", labels=["billing", "shipping"]), None) == "billing"
    assert render("sentiment", SENTIMENT, None, {"type": "text"}) == "Positive"


def test_intent_answers():
    assert render("intent", INTENT, None, None) == "book_flight"
    assert render("intent", INTENT, parsed("intent", labels=["Book Flight", "Book Hotel"]), None) == "Book Flight"
    assert render("intent", INTENT_RESPONSE, None, None) == "Yes, I'm an automated assistant."


def test_faq_and_rule_answers():
    assert render("faq", FAQ, None, None) == "30 days, free label."
    assert render("rule", RULE, None, None) == "Hello! How can I help you today?"


def test_entities_of_every_type():
    assert render("entities", ENTITIES, None, None) == \
        "Angela Merkel (person), Berlin (location), Siemens (organization)"
    assert render("entities", ENTITIES, parsed("entities", "as a list"), None) == \
        "- Angela Merkel (person)\n- Berlin (location)\n- Siemens (organization)"


def test_entities_of_one_type_asked():
    p = parsed("entities", entity_types=["ORG"], entity_type_names={"ORG": "company names"})
    assert render("entities", COMPANIES, p, None) == "Nvidia, Samsung"
    p.instruction = "one per line"
    assert render("entities", COMPANIES, p, None) == "- Nvidia\n- Samsung"


def test_entities_of_several_types_grouped_in_the_users_words():
    result = ENTITIES | {"types": ["PER", "LOC"]}
    p = parsed("entities", entity_types=["PER", "LOC"], entity_type_names={"PER": "people", "LOC": "places"})
    assert render("entities", result, p, None) == "People: Angela Merkel\nPlaces: Berlin"
    p.instruction = "bullet points please"
    assert render("entities", result, p, None) == "People:\n- Angela Merkel\nPlaces:\n- Berlin"
    # A type the request did not name reads in the default words; an empty group says so.
    result = ENTITIES | {"types": ["PER", "DATE"]}
    assert render("entities", result, None, None) == "People: Angela Merkel\nDates: none"


def test_no_entity_found():
    assert render("entities", {"entities": [], "types": []}, None, None) == "None found."
    assert render("entities", {"entities": [], "types": ["ORG", "LOC"]}, None, None) == "None found."


def test_a_result_without_an_answer_cannot_be_rendered():
    with pytest.raises(CannotRender, match="no label"):
        render("classify", {"labels": ["a", "b"]}, None, None)
    with pytest.raises(ValueError, match="no answer form"):
        render("poetry", {}, None, None)


# -- plain JSON ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task,result,p,expected", [
    ("sentiment", SENTIMENT, None, {"sentiment": "Positive"}),
    ("classify", CLASSIFY, None, {"label": "billing"}),
    ("intent", INTENT, None, {"intent": "book_flight"}),
    ("intent", INTENT_RESPONSE, None, {"intent": "are_you_a_bot", "response": "Yes, I'm an automated assistant."}),
    ("faq", FAQ, None, {"answer": "30 days, free label.", "question": "What is your return policy?"}),
    ("rule", RULE, None, {"answer": "Hello! How can I help you today?"}),
    ("entities", ENTITIES, None, {"entities": [{"text": "Angela Merkel", "type": "person"},
                                               {"text": "Berlin", "type": "location"},
                                               {"text": "Siemens", "type": "organization"}]}),
    ("entities", ENTITIES | {"types": ["PER", "LOC"]},
     parsed("entities", entity_type_names={"PER": "people", "LOC": "places"}),
     {"people": ["Angela Merkel"], "places": ["Berlin"]}),
    ("entities", COMPANIES, None, {"organizations": ["Nvidia", "Samsung"]}),
])
def test_json_object(task, result, p, expected):
    assert json.loads(render(task, result, p, {"type": "json_object"})) == expected


def test_json_asked_by_the_instruction():
    assert json.loads(render("sentiment", SENTIMENT, parsed(instruction="Reply in JSON."), None)) == \
        {"sentiment": "Positive"}


# -- JSON Schema -----------------------------------------------------------------------------------------

def test_enum_in_its_own_spelling_with_a_score():
    schema = {"type": "object", "additionalProperties": False, "required": ["sentiment", "confidence"],
              "properties": {"sentiment": {"type": "string", "enum": ["POSITIVE", "NEGATIVE", "NEUTRAL"]},
                             "confidence": {"type": "number"}}}
    assert filled("sentiment", SENTIMENT, schema) == {"sentiment": "POSITIVE", "confidence": 0.93}


def test_enum_found_by_its_values_and_abbreviations():
    schema = {"type": "object", "properties": {"x": {"enum": ["pos", "neg"]}}, "required": ["x"]}
    assert filled("sentiment", SENTIMENT, schema) == {"x": "pos"}


def test_string_property_named_like_a_label():
    for name in ("label", "category", "predicted_class", "answer", "intent"):
        schema = {"type": "object", "properties": {name: {"type": "string"}}, "required": [name]}
        assert filled("classify", CLASSIFY, schema) == {name: "billing"}


def test_nested_object_and_optional_unknowns_left_out():
    schema = {"type": "object", "required": ["result"], "properties": {
        "result": {"type": "object", "required": ["label"], "properties": {
            "label": {"type": "string"}, "probability": {"type": "number"}, "notes": {"type": "string"}}},
        "model": {"type": "string"}}}
    assert filled("classify", CLASSIFY, schema) == {"result": {"label": "billing", "probability": 0.81}}


def test_refs_and_nullable_options():
    schema = {"type": "object", "$defs": {"Sentiment": {"type": "string", "enum": ["positive", "negative"]}},
              "properties": {"sentiment": {"anyOf": [{"$ref": "#/$defs/Sentiment"}, {"type": "null"}]}},
              "required": ["sentiment"]}
    assert filled("sentiment", SENTIMENT, schema) == {"sentiment": "positive"}


def test_array_of_labels_and_const():
    schema = {"type": "object", "required": ["labels", "kind"], "properties": {
        "labels": {"type": "array", "items": {"type": "string", "enum": ["billing", "shipping", "refund"]}},
        "kind": {"const": "ticket"}}}
    assert filled("classify", CLASSIFY, schema) == {"labels": ["billing"], "kind": "ticket"}


def test_intent_schema_with_and_without_a_response():
    schema = {"type": "object", "properties": {"intent": {"type": "string"}, "reply": {"type": "string"}},
              "required": ["intent"]}
    assert filled("intent", INTENT, schema) == {"intent": "book_flight"}
    assert filled("intent", INTENT_RESPONSE, schema) == {"intent": "are_you_a_bot",
                                                         "reply": "Yes, I'm an automated assistant."}


def test_faq_and_rule_schemas():
    schema = {"type": "object", "required": ["answer"], "properties": {
        "answer": {"type": "string"}, "matched_question": {"type": "string"}, "score": {"type": "number"},
        "source_url": {"type": "string"}}}
    assert filled("faq", FAQ, schema) == {"answer": "30 days, free label.",
                                          "matched_question": "What is your return policy?", "score": 0.91}
    assert filled("rule", RULE, {"type": "object", "properties": {"reply": {"type": "string"}}}) == \
        {"reply": "Hello! How can I help you today?"}


def test_entities_as_an_array_of_strings():
    schema = {"type": "object", "properties": {"companies": {"type": "array", "items": {"type": "string"}}},
              "required": ["companies"]}
    assert filled("entities", COMPANIES, schema) == {"companies": ["Nvidia", "Samsung"]}


def test_entities_grouped_by_the_users_type_names():
    result = ENTITIES | {"types": ["PER", "ORG"]}
    p = parsed("entities", entity_types=["PER", "ORG"], entity_type_names={"PER": "people", "ORG": "firms"})
    schema = {"type": "object", "required": ["people", "firms"], "properties": {
        "people": {"type": "array", "items": {"type": "string"}},
        "firms": {"type": "array", "items": {"type": "string"}}}}
    assert filled("entities", result, schema, p) == {"people": ["Angela Merkel"], "firms": ["Siemens"]}


def test_entities_as_objects_with_an_enum_of_types():
    schema = {"type": "object", "required": ["entities"], "properties": {"entities": {
        "type": "array", "items": {"type": "object", "additionalProperties": False,
                                   "required": ["name", "type"],
                                   "properties": {"name": {"type": "string"},
                                                  "type": {"enum": ["PERSON", "LOCATION"]},
                                                  "start": {"type": "integer"},
                                                  "score": {"type": "number"}}}}}}
    assert filled("entities", ENTITIES, schema)["entities"] == [
        {"name": "Angela Merkel", "type": "PERSON", "start": 0, "score": 0.97},
        {"name": "Berlin", "type": "LOCATION", "start": 22, "score": 0.91},
        {"name": "Berlin", "type": "LOCATION", "start": 50, "score": 0.9},
    ]


def test_entities_with_free_type_strings():
    schema = {"type": "object", "properties": {"mentions": {"type": "array", "items": {
        "type": "object", "properties": {"text": {"type": "string"}, "label": {"type": "string"}}}}}}
    assert filled("entities", COMPANIES, schema) == {"mentions": [{"text": "Nvidia", "label": "organization"},
                                                                  {"text": "Samsung", "label": "organization"}]}


def test_free_form_object_gets_the_plain_json_answer():
    assert filled("sentiment", SENTIMENT, {"type": "object"}) == {"sentiment": "Positive"}


@pytest.mark.parametrize("task,result,schema,why", [
    # A required property tier 1 knows nothing about.
    ("sentiment", SENTIMENT, {"type": "object", "required": ["sentiment", "explanation"],
                              "properties": {"sentiment": {"type": "string"}, "explanation": {"type": "string"}}},
     "explanation"),
    # An enum without the label.
    ("classify", CLASSIFY, {"type": "object", "required": ["category"],
                            "properties": {"category": {"enum": ["refund", "delivery"]}}}, "category"),
    # No property can carry the label.
    ("sentiment", SENTIMENT, {"type": "object", "properties": {"summary_length": {"type": "integer"}}},
     "nothing"),
    # The root is not an object.
    ("sentiment", SENTIMENT, {"type": "array", "items": {"type": "string"}}, "root"),
    # Entity items need a field tier 1 does not have.
    ("entities", COMPANIES, {"type": "object", "required": ["entities"], "properties": {"entities": {
        "type": "array", "items": {"type": "object", "required": ["text", "wikipedia_url"],
                                   "properties": {"text": {"type": "string"}, "wikipedia_url": {"type": "string"}}}}}},
     "wikipedia_url"),
    # The answer does not validate (too few items).
    ("entities", {"entities": [], "types": ["ORG"]},
     {"type": "object", "required": ["companies"],
      "properties": {"companies": {"type": "array", "items": {"type": "string"}, "minItems": 1}}}, "validate"),
])
def test_schemas_tier1_cannot_fill(task, result, schema, why):
    with pytest.raises(CannotRender, match=why):
        render(task, result, None, schema_format(schema))


def test_fill_schema_directly():
    schema = {"type": "object", "properties": {"sentiment": {"type": "string"}}}
    assert fill_schema("sentiment", SENTIMENT, None, schema) == {"sentiment": "Positive"}
