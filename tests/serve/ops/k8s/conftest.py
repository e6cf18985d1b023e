"""Fixtures of the Kubernetes tests: the cluster's settings, the application's settings as the cluster loads
them, what `tierwise k8s render` makes of them now, and the committed RayService."""

from __future__ import annotations

import pytest

from serve.ops.k8s.render import DEFAULT_MANIFEST, load_cluster_settings, render
from serve.ops.k8s.settings import DEFAULT_K8S_CONFIG, K8sSettings, load_k8s_settings
from serve.settings import Settings
from tests.serve.ops.k8s.support import load_documents


@pytest.fixture(scope="session")
def k8s_settings() -> K8sSettings:
    """configs/k8s.yaml."""
    return load_k8s_settings(DEFAULT_K8S_CONFIG)


@pytest.fixture(scope="session")
def cluster_settings(k8s_settings) -> Settings:
    """The application's settings as the cluster's replicas load them (with configs/tier2-gpu.yaml)."""
    return load_cluster_settings(k8s_settings)


@pytest.fixture(scope="session")
def rendered() -> str:
    """k8s/rayservice.yaml as `tierwise k8s render` makes it from configs/ now."""
    return render()


@pytest.fixture(scope="session")
def rayservice() -> dict:
    """The committed k8s/rayservice.yaml."""
    (document,) = load_documents(DEFAULT_MANIFEST)
    return document
