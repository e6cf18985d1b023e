"""The OpenAI request model: content parts, tools, response formats and logprobs; errors that name the
field; the parameters forwarded to tier 3; and the request view tier 1's checks read."""

from __future__ import annotations

import pytest

from serve.api.errors import ApiError, parse_body
from serve.api.protocol import ChatCompletionRequest, new_records, request_view

IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
FILE = {"type": "file", "file": {"file_id": "file-abc", "filename": "report.pdf"}}
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {
    "name": "sentiment", "strict": True,
    "schema": {"type": "object", "properties": {"label": {"type": "string", "default": None}}}}}


def body(**kw) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": "Product is great!"}]} | kw


def parse(data: dict) -> ChatCompletionRequest:
    return parse_body(ChatCompletionRequest, data)


def refused(data: dict) -> ApiError:
    with pytest.raises(ApiError) as err:
        parse(data)
    assert err.value.status == 400
    return err.value


def test_every_content_part_type_is_accepted():
    request = parse(body(messages=[
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE, AUDIO, FILE]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
        {"role": "user", "content": [{"type": "text", "text": "Then just the sentiment:"},
                                     {"type": "text", "text": "I love it"}]},
    ]))
    assert request.messages[1].text() == "What is this?"
    assert request.messages[1].media_types() == ["image_url", "input_audio", "file"]
    assert request.messages[3].text() == "Then just the sentiment:\nI love it"
    assert request.messages[2].text() == ""


def test_parts_are_kept_as_sent():
    part = IMAGE | {"future_field": 1}
    request = parse(body(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]))
    assert request.messages[0].record() == {"role": "user", "content": [{"type": "text", "text": "hi"}, part]}


def test_an_image_alone_is_a_user_message():
    assert parse(body(messages=[{"role": "user", "content": [IMAGE]}])).messages[0].text() == ""


@pytest.mark.parametrize("messages,param,words", [
    ([{"role": "user", "content": [{"type": "video", "video": {}}]}], "messages.0.content.0", "'video'"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "messages.0.content.0.image_url.url",
     "Field required"),
    ([{"role": "user", "content": [{"type": "file", "file": {"filename": "x.pdf"}}]}],
     "messages.0.content.0.file", "file_data or file_id"),
    ([{"role": "system", "content": [IMAGE]}, {"role": "user", "content": "hi"}], "messages.0",
     "only allowed on user messages"),
    ([{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}], "messages.0",
     "only allowed on assistant messages"),
    ([{"role": "user", "content": 5}], "messages.0.content", "valid string"),
])
def test_bad_parts_name_the_field(messages, param, words):
    err = refused(body(messages=messages))
    assert err.param == param and words in err.message
    assert err.message.startswith(param) and "tagged-union" not in err.message


def test_tools_and_functions():
    request = parse(body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                         parallel_tool_calls=False))
    assert request.offers_tools()
    assert not parse(body(tools=[TOOL], tool_choice="none")).offers_tools()
    assert not parse(body(tools=[])).offers_tools()
    legacy = parse(body(functions=[TOOL["function"]], function_call={"name": "get_weather"}))
    assert legacy.offers_tools()
    assert parse(body(tools=[{"type": "custom", "custom": {"name": "sql"}}], tool_choice="required")).offers_tools()


@pytest.mark.parametrize("extra,param,words", [
    ({"tool_choice": "auto"}, "tool_choice", "only allowed when tools are given"),
    ({"function_call": "auto"}, "function_call", "only allowed when functions are given"),
    ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice", "'none', 'auto' or 'required'"),
    ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools.0.function.name", "pattern"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]},
     "tools.0.function.parameters", "not a valid JSON Schema"),
    ({"tools": [{"type": "retrieval"}]}, "tools.0", "'retrieval'"),
])
def test_bad_tools_name_the_field(extra, param, words):
    err = refused(body(**extra))
    assert err.param == param and words in err.message


def test_response_formats():
    assert parse(body(response_format={"type": "text"})).response_format_dict() == {"type": "text"}
    assert parse(body(response_format={"type": "json_object"})).response_format_dict() == {"type": "json_object"}
    request = parse(body(response_format=SCHEMA_FORMAT))
    assert request.response_format_dict() == SCHEMA_FORMAT
    assert request.response_format.json_schema.schema_ == SCHEMA_FORMAT["json_schema"]["schema"]


@pytest.mark.parametrize("fmt,param,words", [
    ({"type": "yaml"}, "response_format", "'yaml'"),
    ({"type": "json_schema"}, "response_format.json_schema", "Field required"),
    ({"type": "json_schema", "json_schema": {"schema": {}}}, "response_format.json_schema.name", "Field required"),
    ({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}, "response_format.json_schema.name",
     "pattern"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {}, "colour": "red"}},
     "response_format.json_schema.colour", "Extra inputs"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}, "response_format",
     "not a valid JSON Schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"properties": {"a": {"minLength": -1}}}}},
     "response_format", "not a valid JSON Schema"),
])
def test_bad_response_formats_name_the_field(fmt, param, words):
    err = refused(body(response_format=fmt))
    assert err.param == param and words in err.message


def test_logprobs():
    assert parse(body(logprobs=True, top_logprobs=3)).top_logprobs == 3
    err = refused(body(top_logprobs=3))
    assert err.param == "top_logprobs" and "requires logprobs" in err.message
    assert refused(body(logprobs=True, top_logprobs=21)).param == "top_logprobs"


def test_generation_params_forward_what_was_sent():
    request = parse(body(temperature=0.2, tools=[TOOL], tool_choice="auto", response_format=SCHEMA_FORMAT,
                         logprobs=True, seed=7, stream=True, max_tokens=None))
    assert request.generation_params() == {"temperature": 0.2, "tools": [TOOL], "tool_choice": "auto",
                                           "response_format": SCHEMA_FORMAT, "logprobs": True, "seed": 7}


# -- the request view ------------------------------------------------------------------------------------

def test_view_of_a_plain_request():
    view = request_view(parse(body()), [])
    assert (view.user, view.system, view.context) == ("Product is great!", "", "")
    assert not view.has_tools and view.non_text_parts == () and not view.wants_logprobs
    assert view.response_format is None


def test_view_with_system_prompt_context_and_constraints():
    request = parse(body(
        messages=[{"role": "developer", "content": "Classify tickets."},
                  {"role": "user", "content": "My card was charged twice."},
                  {"role": "assistant", "content": "billing"},
                  {"role": "system", "content": "Answer with one word."},
                  {"role": "user", "content": [{"type": "text", "text": "And this one?"}, IMAGE]}],
        response_format={"type": "json_object"}, logprobs=True))
    view = request_view(request, [])
    assert view.user == "And this one?"
    assert view.system == "Classify tickets.\nAnswer with one word."
    assert view.context == "My card was charged twice.\nbilling"
    assert view.non_text_parts == ("image_url",)
    assert view.response_format == {"type": "json_object"} and view.wants_logprobs


def test_view_counts_media_of_the_new_messages_only():
    history = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE]},
               {"role": "assistant", "content": "A cat.", "tierwise": {"tier": 3}}]
    resent = parse(body(messages=[history[0], {"role": "assistant", "content": "A cat."},
                                  {"role": "user", "content": "Is that positive?"}]))
    assert new_records(resent, history) == [{"role": "user", "content": "Is that positive?"}]
    view = request_view(resent, history)
    assert view.non_text_parts == () and view.user == "Is that positive?"
    assert view.context == "What is this?\nA cat."
    # Not a resend: every message is new.
    assert request_view(resent, [{"role": "user", "content": "something else"}]).non_text_parts == ("image_url",)


def test_view_flags_a_tool_exchange():
    request = parse(body(messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C, sunny"}]))
    assert request_view(request, []).has_tools
    assert request_view(parse(body(tools=[TOOL])), []).has_tools
    assert not request_view(parse(body(tools=[TOOL], tool_choice="none")), []).has_tools
