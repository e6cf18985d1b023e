"""Tenants over HTTP on the real cluster, with the official openai client: each limit's 429, the PII policies
(the tier-3 test server never sees redacted values) and the usage ledger against the responses' own figures.
The tenants' policies are in conftest.TENANTS."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import httpx
import openai
import pytest

PII_TEXT = ("Draft a polite reply to Maria Gonzalez (maria.gonzalez@example.com, +1 415 555 0132) confirming "
            "that the refund to card 4111 1111 1111 1111 was issued.")
PII_VALUES = ("Maria Gonzalez", "maria.gonzalez@example.com", "+1 415 555 0132", "4111 1111 1111 1111")


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def client_for(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=30)


def limit_error(err: openai.RateLimitError) -> tuple[str, str, int]:
    body = err.response.json()["error"]
    return body["param"], body["code"], int(err.response.headers["retry-after"])


def test_a_request_rate_limit_is_a_429_that_names_it(base_url, make_key):
    c = client_for(base_url, make_key("it-rpm"))
    for _ in range(2):
        c.chat.completions.create(model="auto", messages=user("Product is great!"))
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="auto", messages=user("Product is great!"))
    param, code, retry_after = limit_error(err.value)
    assert (param, code) == ("requests_per_minute", "rate_limit_exceeded") and 1 <= retry_after <= 60
    assert "requests_per_minute" in err.value.response.json()["error"]["message"]


def test_a_token_rate_limit_counts_the_answer_too(base_url, make_key):
    c = client_for(base_url, make_key("it-tpm"))
    # A clear bucket admits the request; its prompt and the provider's answer then put the tenant in debt.
    c.chat.completions.create(model="fake-frontier", messages=user("Write a professional follow-up " * 6))
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="auto", messages=user("Product is great!"))
    param, code, retry_after = limit_error(err.value)
    assert (param, code) == ("tokens_per_minute", "rate_limit_exceeded") and retry_after >= 1


def test_a_spent_daily_budget_is_a_429_until_midnight_utc(base_url, make_key, provider):
    c = client_for(base_url, make_key("it-spend"))
    c.chat.completions.create(model="fake-frontier", messages=user("Write a professional follow-up."))
    sent = len(provider.requests)
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="fake-frontier", messages=user("Write a professional follow-up."))
    param, code, retry_after = limit_error(err.value)
    now = dt.datetime.now(dt.UTC)
    to_midnight = (dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC) - now).total_seconds()
    assert (param, code) == ("spend_per_day_usd", "insufficient_quota")
    assert abs(retry_after - to_midnight) < 60
    # Refused before any paid call.
    assert len(provider.requests) == sent


def test_redacted_pii_never_reaches_tier3_and_comes_back_in_the_answer(base_url, make_key, provider):
    c = client_for(base_url, make_key("it-redact"))
    for stream in (False, True):
        provider.reset()
        if stream:
            chunks = list(c.chat.completions.create(model="fake-frontier", messages=user(PII_TEXT), stream=True))
            answer = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            tierwise = chunks[-1].model_extra["tierwise"]
        else:
            completion = c.chat.completions.create(model="fake-frontier", messages=user(PII_TEXT))
            answer, tierwise = completion.choices[0].message.content, completion.model_extra["tierwise"]
        seen = json.dumps(provider.requests)
        assert provider.requests and not any(value in seen for value in PII_VALUES), seen
        assert "[EMAIL_1]" in seen and "[PERSON_1]" in seen
        # The fake provider echoes the request: the placeholders it echoed are the client's values again.
        assert all(value in answer for value in PII_VALUES), answer
        assert tierwise["pii_redacted"] is True


def test_pii_kept_in_the_cluster_never_reaches_tier3(base_url, make_key, provider):
    c = client_for(base_url, make_key("it-keep"))
    provider.reset()
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="fake-frontier", messages=user(PII_TEXT))
    assert err.value.response.json()["error"]["code"] == "pii_kept_in_cluster"
    # Routed, the request stays on the tiers the cluster has (here tier 1, unsure or not, as no tier 2 runs).
    try:
        completion = c.chat.completions.create(model="auto", messages=user(PII_TEXT))
        assert completion.model_extra["tierwise"]["tier"] < 3
    except openai.APIStatusError as refused:
        assert "keeps PII in the cluster" in refused.response.json()["error"]["message"]
    assert provider.requests == []
    # Without PII the same tenant reaches tier 3 as usual.
    assert c.chat.completions.create(model="fake-frontier", messages=user("Write a haiku.")).model_extra[
        "tierwise"]["tier"] == 3


def test_the_ledger_adds_up_to_the_responses_own_figures(base_url, make_key):
    tenant = f"it-ledger-{uuid.uuid4().hex[:6]}"
    key = make_key(tenant)
    c = client_for(base_url, key)
    responses = [c.chat.completions.create(model="auto", messages=user(text)).model_extra["tierwise"]
                 for text in ("Product is great!", "Prove that the square root of 2 is irrational.",
                              "The service was awful.")]
    streamed = list(c.chat.completions.create(model="fake-frontier", messages=user("Write a haiku."), stream=True))
    responses.append(streamed[-1].model_extra["tierwise"])
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}) as http:
        report = http.get("/v1/usage").json()
        assert http.get("/v1/usage", params={"tenant": "it-rpm"}).status_code == 403
    assert report["tenant"] == tenant and report["total"]["requests"] == 4
    assert report["total"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in responses), abs=1e-9)
    assert report["total"]["baseline_cost_usd"] == pytest.approx(sum(r["baseline_cost_usd"] for r in responses),
                                                                 abs=1e-9)
    by_tier = {row["tier"]: row["requests"] for row in report["by_tier"]}
    assert by_tier == {t: sum(r["tier"] == t for r in responses) for t in {r["tier"] for r in responses}}
    assert report["total"]["savings_usd"] == pytest.approx(report["total"]["baseline_cost_usd"]
                                                           - report["total"]["cost_usd"], abs=1e-9)
    admin = make_key("it-ops", True)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {admin}"}) as http:
        everyone = http.get("/v1/usage", params={"tenant": "*"}).json()
    assert tenant in {row["tenant"] for row in everyone["by_tenant"]}
