"""Metrics of the gateway: traffic, latency and tokens by tier and model, router time, escalations, cost and
savings, errors, store errors.

Each metric is recorded twice:

- through Ray's metrics API (``ray.serve.metrics``), inside a Ray worker: Ray's metrics agent on every node
  exports it on the node's metrics export port as ``ray_<name>``, tagged with the application, deployment and
  replica, so a Prometheus scrape of every node sums all replicas (``k8s/prometheus/scrape.yaml``);
- in this process's prometheus-client registry, which ``GET /metrics`` serves: one replica's own view,
  for a look at a single replica and for a gateway run without Ray.

Ray's metric objects are made on first use, not at import: Serve tags a metric with its replica only when it
is made inside the replica, and this module is imported before the replica exists.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ROUTER_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25)


class _Bound:
    """A metric with its label values set, as prometheus-client's ``labels(...)`` returns."""

    def __init__(self, family: _Family, values: tuple[str, ...]):
        self.family, self.values = family, values

    def _local(self):
        # prometheus-client refuses labels() on a metric without labels.
        return self.family.local.labels(*self.values) if self.values else self.family.local

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` to a counter."""
        self._local().inc(amount)
        # Ray's counters refuse a zero increment (a free answer still counts as a request elsewhere).
        if amount > 0 and (remote := self.family.remote()) is not None:
            remote.inc(amount, tags=self.family.tags(self.values))

    def observe(self, value: float) -> None:
        """Add one observation to a histogram."""
        self._local().observe(value)
        if (remote := self.family.remote()) is not None:
            remote.observe(value, tags=self.family.tags(self.values))


class _Family:
    """One metric, in the local registry and (inside Ray) through Ray's metrics agent."""

    def __init__(self, kind: str, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...] = ()):
        self.kind, self.name, self.doc, self.label_names, self.buckets = kind, name, doc, labels, buckets
        if kind == "counter":
            self.local = Counter(f"{name}_total", doc, labels)
        else:
            self.local = Histogram(name, doc, labels, buckets=buckets)
        self._remote = None

    def labels(self, *values: str) -> _Bound:
        """The metric with these label values, in the order of its labels."""
        return _Bound(self, tuple(str(v) for v in values))

    def tags(self, values: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(self.label_names, values))

    def remote(self):
        """Ray's metric object, made on first use inside a Ray worker; None outside Ray."""
        if self._remote is None:
            import ray

            if not ray.is_initialized():
                return None
            from ray.serve import metrics as ray_metrics

            if self.kind == "counter":
                # Ray's exporter adds ``_total`` to a counter's name, and ``ray_`` in front.
                self._remote = ray_metrics.Counter(self.name, description=self.doc, tag_keys=self.label_names)
            else:
                self._remote = ray_metrics.Histogram(self.name, description=self.doc, boundaries=list(self.buckets),
                                                     tag_keys=self.label_names)
        return self._remote


REQUESTS = _Family("counter", "tierwise_requests", "Requests answered or refused, by endpoint, tier, model, task and "
                   "HTTP status", ("endpoint", "tier", "model", "task", "status"))
LATENCY = _Family("histogram", "tierwise_request_seconds", "Gateway latency until the whole answer, by endpoint, "
                  "tier and model", ("endpoint", "tier", "model"), LATENCY_BUCKETS)
FIRST_TOKEN = _Family("histogram", "tierwise_first_token_seconds", "Streamed answers: time to the first content "
                      "(or tool-call) chunk, by tier and model", ("tier", "model"), LATENCY_BUCKETS)
ROUTER = _Family("histogram", "tierwise_router_seconds", "Routing decision time as the gateway waits for it (one "
                 "encoder pass, plus the handle hop when the router is its own deployment)", (), ROUTER_BUCKETS)
ESCALATIONS = _Family("counter", "tierwise_escalations", "Requests handed up a tier, by cause",
                      ("from_tier", "to_tier", "cause"))
TOKENS = _Family("counter", "tierwise_tokens", "Tokens of answered requests, by tier, model and kind (prompt or "
                 "completion)", ("tier", "model", "kind"))
COST = _Family("counter", "tierwise_cost_usd", "What answers cost, by tier and model", ("tier", "model"))
BASELINE_COST = _Family("counter", "tierwise_baseline_cost_usd", "What the same answers would have cost on the "
                        "reference frontier model, by the tier that answered", ("tier",))
ERRORS = _Family("counter", "tierwise_errors", "Requests refused or failed, by HTTP status and error code",
                 ("status", "code"))
STORE_ERRORS = _Family("counter", "tierwise_store_errors", "Redis calls that failed (connection or timeout), by "
                       "store and operation", ("store", "operation"))
