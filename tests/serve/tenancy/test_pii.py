"""PII detectors, conversation-wide detection, and redaction with placeholders that are restored (streamed too)."""

from __future__ import annotations

import json

import pytest

from models.entities import Entity
from serve.tenancy.pii import (Redactor, StreamRestorer, accounts, addresses, cards, conversation_pii, emails, find_pii,
                       iban_valid, luhn_valid, message_texts, phones)


def hits(detect, text: str) -> list[str]:
    return [text[start:end] for start, end in detect(text)]


def person(text: str, value: str) -> Entity:
    start = text.index(value)
    return Entity(value, "PER", start, start + len(value), 0.9)


def test_luhn_and_iban_checks():
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and iban_valid("GB82WEST12345698765432")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33") and not iban_valid("DE89 3704")


def test_emails():
    assert hits(emails, "write to jane.doe+news@example.co.uk today") == ["jane.doe+news@example.co.uk"]
    assert hits(emails, "meet me @ the station at 5") == []


def test_cards_pass_the_luhn_check_and_are_whole_numbers():
    text = "card 4111 1111 1111 1111, amex 3782-822463-10005, typo 4111 1111 1111 1112."
    assert hits(cards, text) == ["4111 1111 1111 1111", "3782-822463-10005"]
    assert hits(cards, "serial 12 4111 1111 1111 1111 9") == [], "part of a longer number"


def test_accounts_ibans_and_cued_numbers():
    text = ("IBAN DE89 3704 0044 0532 0130 00 IN FULL, typo GB82 WEST 1234 5698 7654 33; my account number is "
            "12345678, routing 021000021, acct #987654321012, account 12345.")
    assert hits(accounts, text) == ["DE89 3704 0044 0532 0130 00", "12345678", "021000021", "987654321012"]
    assert hits(accounts, "I have 3 accounts 12345678") == []


@pytest.mark.parametrize("text,phone", [
    ("mail or call +1 (415) 555-0100.", "+1 (415) 555-0100"),
    ("call me on 4155550100 tonight", "4155550100"),
    ("office: 020 7946 0958", "020 7946 0958"),
    ("mobile (030) 1234-5678", "(030) 1234-5678"),
])
def test_phones(text, phone):
    assert hits(phones, text) == [phone]


@pytest.mark.parametrize("text", [
    "shipped on 2024-01-15 and billed on 15.01.2024",
    "order 123-456-7890 is late",
    "my order number is 555-123-4567",
    "ISBN 978-3-16-148410-0",
    "the server at 192.168.100.200",
    "reference 12345678 and the total 1234567890",
    "card 4111 1111 1111 1111 1111 2",
])
def test_dates_references_and_addresses_of_machines_are_not_phones(text):
    assert hits(phones, text) == []


@pytest.mark.parametrize("text,address", [
    ("Send it to 1600 Pennsylvania Avenue NW, Washington, DC 20500 please.",
     "1600 Pennsylvania Avenue NW, Washington, DC 20500"),
    ("It is 221B Baker Street, London NW1 6XE.", "221B Baker Street, London NW1 6XE"),
    ("I live at 742 Evergreen Terrace. It is yellow.", "742 Evergreen Terrace"),
    ("Ship to 10 Downing St. Apt 4, London SW1A 2AA", "10 Downing St. Apt 4, London SW1A 2AA"),
    ("Meet at 350 5th Ave, New York, NY 10118", "350 5th Ave, New York, NY 10118"),
])
def test_street_addresses(text, address):
    assert hits(addresses, text) == [address]


@pytest.mark.parametrize("text", [
    "What is the capital of France?",
    "I walked 5 miles down the road to Paris.",
    "There are 2 ways to cross the street.",
    "Fifth Avenue in New York is famous.",
])
def test_places_alone_are_not_addresses(text):
    assert find_pii(text, []) == []


def test_find_pii_regex_wins_over_an_overlapping_name_and_sorts():
    text = "Maria Garcia (bob@example.com), card 4111-1111-1111-1111"
    names = [person(text, "Maria Garcia"), person(text, "bob"), Entity("France", "LOC", 0, 0, 1.0)]
    found = find_pii(text, [n for n in names if n.type == "PER"])
    assert [(e.type, e.text) for e in found] == [("PER", "Maria Garcia"), ("EMAIL", "bob@example.com"),
                                                  ("CARD", "4111-1111-1111-1111")]


def test_find_pii_refuses_names_of_another_text():
    with pytest.raises(ValueError, match="'Maria' at 0:5 is not in the text"):
        find_pii("Hello there", [Entity("Maria", "PER", 0, 5, 0.9)])


def test_a_name_found_in_one_text_is_redacted_in_all_of_them():
    texts = ["I am Maria Garcia.", "Maria Garcia again, and Maria alone.", "Garcia? Mariana? nothing here"]
    names = [[person(texts[0], "Maria Garcia")], [Entity("Maria", "PER", 0, 5, 0.4)], []]
    found = conversation_pii(texts, names)
    assert [[e.text for e in spans] for spans in found] == [["Maria Garcia"], ["Maria Garcia", "Maria"], []]
    with pytest.raises(ValueError, match="2 name lists for 3 texts"):
        conversation_pii(texts, names[:2])


def test_the_same_value_has_the_same_placeholder_across_messages():
    redactor = Redactor()
    first = "Maria Garcia wrote from maria@example.com"
    second = "Reply to maria@example.com, cc John Smith and Maria Garcia"
    one = redactor.redact(first, find_pii(first, [person(first, "Maria Garcia")]))
    two = redactor.redact(second, find_pii(second, [person(second, "John Smith"), person(second, "Maria Garcia")]))
    assert one == "[PERSON_1] wrote from [EMAIL_1]"
    assert two == "Reply to [EMAIL_1], cc [PERSON_2] and [PERSON_1]"
    assert dict(redactor.placeholders) == {"[PERSON_1]": "Maria Garcia", "[EMAIL_1]": "maria@example.com",
                                           "[PERSON_2]": "John Smith"}
    assert redactor.restore(two) == second


def test_a_fresh_redactor_has_redacted_nothing_and_spans_are_checked():
    redactor = Redactor()
    assert not redactor.redacted and redactor.redact("no pii", []) == "no pii"
    with pytest.raises(ValueError, match="overlaps the span before it"):
        redactor.redact("abcdef", [Entity("abc", "PER", 0, 3, 1.0), Entity("bcd", "PER", 1, 4, 1.0)])
    with pytest.raises(ValueError, match="outside the text"):
        redactor.redact("abc", [Entity("abc", "PER", 0, 3, 1.0), Entity("x", "PER", 5, 6, 1.0)])
    with pytest.raises(ValueError, match="makes no placeholder name"):
        redactor.redact("abcdef", [Entity("abc", "work-of-art", 0, 3, 1.0)])
    assert not redactor.redacted, "a refused text issues no placeholder"


MESSAGES = [
    {"role": "system", "content": "You help Maria Garcia."},
    {"role": "user", "content": [{"type": "text", "text": "Book a table, my phone is +1 415 555 0100"},
                                 {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "book", "arguments": json.dumps({"name": "Maria Garcia", "phone": "+1 415 555 0100"})}}]},
    {"role": "tool", "tool_call_id": "call_1",
     "content": "Booked for Maria Garcia, confirmation sent to maria@example.com"},
]


def redacted_messages() -> tuple[Redactor, list[dict]]:
    texts = message_texts(MESSAGES)
    names = [[person(text, "Maria Garcia")] if "Maria Garcia" in text else [] for text in texts]
    redactor = Redactor()
    return redactor, redactor.redact_messages(MESSAGES, conversation_pii(texts, names))


def test_message_texts_in_a_fixed_order():
    texts = message_texts(MESSAGES)
    assert texts == ["You help Maria Garcia.", "Book a table, my phone is +1 415 555 0100",
                     MESSAGES[2]["tool_calls"][0]["function"]["arguments"], MESSAGES[3]["content"]]


def test_redact_messages_covers_content_parts_tool_arguments_and_tool_results():
    redactor, messages = redacted_messages()
    assert messages[0]["content"] == "You help [PERSON_1]."
    assert messages[1]["content"][0]["text"] == "Book a table, my phone is [PHONE_1]"
    assert messages[1]["content"][1] == MESSAGES[1]["content"][1]
    assert json.loads(messages[2]["tool_calls"][0]["function"]["arguments"]) == {"name": "[PERSON_1]",
                                                                                 "phone": "[PHONE_1]"}
    assert messages[3] == {**MESSAGES[3], "content": "Booked for [PERSON_1], confirmation sent to [EMAIL_1]"}
    sent = json.dumps(messages)
    assert all(value not in sent for value in redactor.placeholders.values())
    assert MESSAGES[0]["content"] == "You help Maria Garcia.", "the request's own messages are untouched"


def test_redact_messages_wants_one_span_list_per_text():
    with pytest.raises(ValueError, match="3 span lists for 4 texts"):
        Redactor().redact_messages(MESSAGES, [[], [], []])


def test_round_trip_restores_every_message():
    redactor, messages = redacted_messages()
    assert [redactor.restore_message(m) for m in messages] == MESSAGES


def test_restore_puts_values_back_in_tool_call_arguments():
    redactor, _ = redacted_messages()
    answer = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_2", "type": "function", "function": {"name": "sms", "arguments": '{"to": "[PHONE_1]"}'}}]}
    restored = redactor.restore_message(answer)
    assert json.loads(restored["tool_calls"][0]["function"]["arguments"]) == {"to": "+1 415 555 0100"}


def test_invented_placeholders_stay_as_they_are():
    redactor, _ = redacted_messages()
    assert redactor.restore("[PERSON_1] or [EMAIL_9] or [PERSON_1 or [note]") == \
        "Maria Garcia or [EMAIL_9] or [PERSON_1 or [note]"


ANSWER = "Dear [PERSON_1], we called [PHONE_1] and wrote to [EMAIL_1]; see [1] and [EMAIL_9]. [PERSON_1]"


def test_the_stream_restorer_at_every_split_point():
    redactor, _ = redacted_messages()
    for i in range(len(ANSWER) + 1):
        for j in range(i, len(ANSWER) + 1):
            stream = StreamRestorer(redactor)
            out = stream.feed(ANSWER[:i]) + stream.feed(ANSWER[i:j]) + stream.feed(ANSWER[j:]) + stream.flush()
            assert out == redactor.restore(ANSWER), (i, j)


def test_the_stream_restorer_one_character_at_a_time():
    redactor, _ = redacted_messages()
    stream = StreamRestorer(redactor)
    assert "".join(map(stream.feed, ANSWER)) + stream.flush() == redactor.restore(ANSWER)


def test_the_stream_restorer_holds_back_only_what_could_become_a_placeholder():
    redactor, _ = redacted_messages()
    stream = StreamRestorer(redactor)
    assert stream.feed("see [1] and [N") == "see [1] and [N", "no placeholder starts with [N"
    assert stream.feed("ote] then [EM") == "ote] then "
    assert stream.feed("AIL_1] hi [PERSON_") == "maria@example.com hi "
    assert stream.feed("7] bye [") == "[PERSON_7] bye "
    assert stream.flush() == "["
    assert stream.flush() == ""


def test_a_long_conversation_reaches_the_provider_without_its_values(router):
    filler = "The quarterly report covers revenue, costs and the outlook for the next year. " * 15
    messages = [{"role": "user", "content": "Summarise the report for me."},
                {"role": "tool", "tool_call_id": "call_1",
                 "content": filler + "Prepared by Angela Merkel (angela@example.org, +49 30 1234 5678)."}]
    texts = message_texts(messages)
    redactor = Redactor()
    sent = redactor.redact_messages(messages, conversation_pii(texts, router.pii_entities(texts)))
    assert sent[1]["content"].endswith("Prepared by [PERSON_1] ([EMAIL_1], [PHONE_1]).")
    assert [redactor.restore_message(m) for m in sent] == messages
