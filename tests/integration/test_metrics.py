"""Metrics add up across replicas: after traffic to the two gateway replicas of the ``isolated`` application,
a scrape of the node's Ray metrics exporter (what Prometheus scrapes in a cluster) sums to the requests sent,
their tokens and their cost, and both replicas' series are there."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

APP = "isolated"
PROMPTS = ["Product is great!", "I absolutely hate this blender.", "What a wonderful day at the beach!",
           "The delivery was late and the box was crushed."]


def scrape() -> list:
    import ray

    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def total(samples: list, name: str, **labels: str) -> float:
    """The sum over every replica (and node) of the samples of ``name`` carrying ``labels``."""
    return sum(s.value for s in samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def settled(read, timeout: float = 30.0):
    """``read()`` once two reads 2 s apart agree: the exporter has caught up with what was recorded."""
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        time.sleep(2)
        now = read()
        if now == last:
            return now
        last = now
    pytest.fail(f"the metrics never settled in {timeout} s")


def figures() -> dict:
    samples = scrape()
    chat = {"application": APP, "endpoint": "chat", "tier": "1"}
    return {
        "requests": total(samples, "ray_tierwise_requests_total", **chat),
        "latency_count": total(samples, "ray_tierwise_request_seconds_count", **chat),
        "router_count": total(samples, "ray_tierwise_router_seconds_count", application=APP),
        "tokens": total(samples, "ray_tierwise_tokens_total", application=APP, tier="1"),
        "cost": round(total(samples, "ray_tierwise_cost_usd_total", application=APP, tier="1"), 9),
        "baseline": round(total(samples, "ray_tierwise_baseline_cost_usd_total", application=APP, tier="1"), 9),
        "replicas": {s.labels["replica"] for s in samples
                     if s.name == "ray_tierwise_requests_total" and s.labels.get("application") == APP},
        "gateway_queue_series": sum(1 for s in samples if s.name == "ray_serve_replica_processing_queries"
                                    and s.labels.get("application") == APP
                                    and s.labels.get("deployment") == "Gateway"),
    }


def test_a_scrape_sums_every_gateway_replica(cluster):
    base = cluster[APP]
    before = settled(figures)
    sent = 40

    def ask(i: int) -> dict:
        r = httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
            "model": "auto", "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]})
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(sent)))
    assert all(a["tierwise"]["tier"] == 1 for a in answers)
    after = settled(figures)

    assert after["requests"] - before["requests"] == sent
    assert after["latency_count"] - before["latency_count"] == sent
    assert after["router_count"] - before["router_count"] == sent
    assert after["tokens"] - before["tokens"] == sum(a["usage"]["total_tokens"] for a in answers)
    assert after["cost"] - before["cost"] == pytest.approx(sum(a["tierwise"]["cost_usd"] for a in answers), rel=1e-6)
    assert after["baseline"] - before["baseline"] == pytest.approx(
        sum(a["tierwise"]["baseline_cost_usd"] for a in answers), rel=1e-6)
    assert len(after["replicas"]) == 2, after["replicas"]
    assert after["gateway_queue_series"] == 2
