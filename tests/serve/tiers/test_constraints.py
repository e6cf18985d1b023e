"""What keeps tier 1 from answering: tools, media, logprobs and languages its models do not read."""

from __future__ import annotations

import pytest

from models.request import RequestView
from serve.tiers.constraints import tier1_blocker

EN = {"en"}


def test_a_plain_english_request_may_go_to_tier1():
    assert tier1_blocker(RequestView("Product is great!"), EN) is None
    assert tier1_blocker(RequestView("ok", system="Reply with one word."), EN) is None


def test_a_response_format_does_not_block():
    view = RequestView("Product is great!", response_format={"type": "json_schema", "json_schema": {}})
    assert tier1_blocker(view, EN) is None


@pytest.mark.parametrize("view,words", [
    (RequestView("What's the weather?", has_tools=True), "tools"),
    (RequestView("What is this?", non_text_parts=("image_url", "file")), "image_url, file content"),
    (RequestView("Product is great!", wants_logprobs=True), "logprobs"),
    (RequestView("Das Produkt ist großartig!"), "looks de"),
    (RequestView("Produkt jest świetny!"), "looks pl"),
    (RequestView("这个产品很好！"), "Chinese characters"),
    (RequestView("Product is great!", system="Réponds uniquement avec une étiquette, sans explication."),
     "looks fr"),
])
def test_blockers(view, words):
    assert words in tier1_blocker(view, EN)


def test_the_configured_languages_count():
    assert tier1_blocker(RequestView("Das Produkt ist großartig!"), {"en", "de"}) is None


def test_cheapest_check_first():
    view = RequestView("Wo ist mein Paket?", has_tools=True, non_text_parts=("image_url",))
    assert "tools" in tier1_blocker(view, EN)
