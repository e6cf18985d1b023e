"""Helpers of the Kubernetes tests: reading manifests, and the metric names a PromQL expression reads."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from serve.settings import REPO_ROOT

K8S_DIR = REPO_ROOT / "k8s"
# The Kubernetes version the manifests are validated for (kubernetes-validate's schemas): a release every
# maintained managed service (EKS, GKE, AKS) offered when these manifests were written.
KUBERNETES_VERSION = "1.33.0"


def load_documents(path: Path) -> list[dict]:
    """The YAML documents of a manifest file (empty ones left out)."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_templates(rayservice: dict) -> dict[str, dict]:
    """The RayService's pod templates by group ("head" for the head group)."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    return {"head": cluster["headGroupSpec"]["template"],
            **{g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]}}


def as_pod_template(name: str, template: dict) -> dict:
    """A RayService pod template as a core/v1 PodTemplate object, which kubernetes-validate has a schema for."""
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


# PromQL words that are not metric names: binary-operator modifiers and set operators.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers less functions (followed by a parenthesis),
    keywords, label matchers, label lists, ranges and strings. Enough for the dashboard's queries, not a parser."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if match.group() not in _KEYWORDS and not expr[match.end():].lstrip().startswith("("):
            names.add(match.group())
    return names
