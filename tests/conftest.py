"""Shared fixtures: settings on the embedded defaults, and the in-process models (loaded once)."""

from __future__ import annotations

import os

import pytest

from serve.ops.proxy_env import proxy_env

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The proxy `tierwise serve` uses; set before anything imports ray.serve, which reads them at import.
os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
# Serve holds a stopping ingress replica open for 30 s by default (for external load balancers); the tests'
# HAProxy needs none of that, and every session would wait it out at teardown.
os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")
# HAProxy's ports and files of its own (serve/ops/proxy_env.py): a running `make serve` keeps its own.
for _name, _value in proxy_env().items():
    os.environ.setdefault(_name, _value)

from models.router import Router  # noqa: E402
from models.tier1 import Tier1Models  # noqa: E402
from serve.settings import Settings, load_settings  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The embedded defaults of configs/tierwise.yaml."""
    return load_settings()


@pytest.fixture(scope="session")
def router(settings) -> Router:
    """The router, in-process."""
    return Router.from_settings(settings)


@pytest.fixture(scope="session")
def tier1(settings) -> Tier1Models:
    """The tier-1 models, in-process."""
    return Tier1Models.from_settings(settings)


def pytest_collection_modifyitems(items):
    """Tests marked ``own_ray`` run first: they start Ray instances of their own, and one sharing the machine
    with the integration tests' cluster has been seen cutting a request in flight while it stopped."""
    items.sort(key=lambda item: item.get_closest_marker("own_ray") is None)
