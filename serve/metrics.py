"""Prometheus metrics of the gateway: traffic by tier, escalations, latency, cost and savings."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("tierwise_requests_total", "Requests answered, by endpoint, tier, task and HTTP status",
                   ["endpoint", "tier", "task", "status"])
ESCALATIONS = Counter("tierwise_escalations_total", "Requests handed up a tier, by cause",
                      ["from_tier", "to_tier", "cause"])
LATENCY = Histogram("tierwise_request_seconds", "Gateway latency until the answer (or first byte when streaming)",
                    ["endpoint", "tier"],
                    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
COST = Counter("tierwise_cost_usd_total", "What answers cost, by tier and model", ["tier", "model"])
BASELINE_COST = Counter("tierwise_baseline_cost_usd_total",
                        "What the same answers would have cost on the reference frontier model", ["tier"])
ERRORS = Counter("tierwise_errors_total", "Requests refused or failed, by HTTP status and error code",
                 ["status", "code"])
