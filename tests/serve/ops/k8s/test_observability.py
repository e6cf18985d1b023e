"""Monitoring: the Grafana dashboard queries only metrics Tierwise and Serve export (serve.ops.k8s.render.DASHBOARD_METRICS),
and the Prometheus scrape config and PodMonitor find the metrics port the RayService's pods open."""

from __future__ import annotations

import json
import re
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from serve.ops.k8s.render import DASHBOARD_METRICS, METRICS_PORT, PART_OF
from tests.serve.ops.k8s.support import K8S_DIR, load_documents, pod_templates, promql_metric_names

DASHBOARD = K8S_DIR / "grafana" / "tierwise.json"


def _panels(dashboard: dict) -> list[dict]:
    """Every panel that is not a row, rows' nested panels included."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found += panel.get("panels", [])
        else:
            found.append(panel)
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_queries_only_known_metrics(dashboard):
    used = set()
    for panel in _panels(dashboard):
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = promql_metric_names(target["expr"])
            assert names, f"{panel['title']}: no metric in {target['expr']!r}"
            unknown = names - DASHBOARD_METRICS
            assert not unknown, f"{panel['title']}: {sorted(unknown)} are not in serve.ops.k8s.render.DASHBOARD_METRICS"
            used |= names
    # And every metric in the list has a panel.
    assert used == DASHBOARD_METRICS, sorted(DASHBOARD_METRICS - used)


@pytest.mark.parametrize("expr, names", [
    ("sum by (tier) (rate(ray_tierwise_requests_total[5m]))", {"ray_tierwise_requests_total"}),
    ('sum by (tier) (rate(ray_tierwise_request_total{tier="1"}[5m])) / ignoring (tier) group_left '
     "sum(rate(ray_tierwise_requests_total[5m]))", {"ray_tierwise_request_total", "ray_tierwise_requests_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(tierwise_router_seconds_bucket[$__range]))) * 1e3",
     {"tierwise_router_seconds_bucket"}),
    ("count by (deployment) (ray_serve_replica_processing_queries offset 5m) and on (deployment) up",
     {"ray_serve_replica_processing_queries", "up"}),
])
def test_metric_names_are_read_from_promql(expr, names):
    # The check above can fail: a misspelt or unprefixed name is read as the unknown metric it is.
    assert promql_metric_names(expr) == names


def test_dashboard_panels_are_well_formed(dashboard):
    panels = _panels(dashboard)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    assert any(v["name"] == "datasource" and v["type"] == "datasource" for v in dashboard["templating"]["list"])
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in ("requests/s by tier", "share of traffic", "latency", "first token", "router", "escalations",
                  "errors", "tokens/s", "baseline", "savings", "redis", "queued", "ongoing", "replicas"):
        assert topic in titles, topic


# -- Prometheus: a typed model of the scrape config fields used (a misspelt field fails) --------------------


class _Prometheus(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RelabelConfig(_Prometheus):
    source_labels: list[str] = []
    regex: str = "(.*)"
    target_label: str | None = None
    action: Literal["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep", "hashmod"] = "replace"


class KubernetesSdConfig(_Prometheus):
    role: Literal["pod", "service", "endpoints", "endpointslice", "node", "ingress"]


class ScrapeConfig(_Prometheus):
    job_name: str
    scrape_interval: str
    kubernetes_sd_configs: list[KubernetesSdConfig]
    relabel_configs: list[RelabelConfig]


class PrometheusConfig(_Prometheus):
    scrape_configs: list[ScrapeConfig]


def _meta_label(label: str) -> str:
    """Prometheus's name for a pod label in Kubernetes service discovery."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", label)


def _keeps(job: ScrapeConfig, source: str, value: str) -> bool:
    """Whether the job keeps targets whose ``source`` is ``value`` (Prometheus anchors relabel regexes)."""
    rules = [r for r in job.relabel_configs if r.action == "keep" and r.source_labels == [source]]
    return bool(rules) and all(re.fullmatch(r.regex, value) for r in rules)


def test_scrape_config_keeps_the_metrics_port_of_every_ray_pod(rayservice):
    (document,) = load_documents(K8S_DIR / "prometheus" / "scrape.yaml")
    (job,) = PrometheusConfig.model_validate(document).scrape_configs
    assert [sd.role for sd in job.kubernetes_sd_configs] == ["pod"]
    for rule in job.relabel_configs:
        re.compile(rule.regex)
    node_type = _meta_label("ray.io/node-type")
    assert _keeps(job, node_type, "head") and _keeps(job, node_type, "worker") and not _keeps(job, node_type, "redis")
    ((label, value),) = PART_OF.items()
    assert _keeps(job, _meta_label(label), value)
    # The port it keeps is the one every Ray container exports Ray's metrics on.
    for template in pod_templates(rayservice).values():
        (port,) = [p for p in template["spec"]["containers"][0]["ports"] if p["containerPort"] == METRICS_PORT]
        assert _keeps(job, "__meta_kubernetes_pod_container_port_name", port["name"])


def test_podmonitor_selects_the_same_pods_and_port(rayservice):
    (monitor,) = load_documents(K8S_DIR / "prometheus" / "podmonitor.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    selector = monitor["spec"]["selector"]
    assert selector["matchLabels"] == PART_OF
    assert selector["matchExpressions"] == [{"key": "ray.io/node-type", "operator": "In", "values": ["head", "worker"]}]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"] for t in pod_templates(rayservice).values() for p in t["spec"]["containers"][0]["ports"]
             if p["containerPort"] == METRICS_PORT}
    assert ports == {endpoint["port"]}
