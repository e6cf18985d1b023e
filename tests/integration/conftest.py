"""A real Ray cluster (this machine's 2 cores) running the Tierwise application, the real Redis, and a local
OpenAI-compatible provider for tier 3.

Two Serve applications share the cluster: ``main`` (router and tier 1 inside the gateway, provider
configured, the shared Redis) and ``isolated`` (two gateway replicas, router and tier 1 as their own
deployments, one handle hop each; no provider; a private redis-server this fixture can kill).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid

import httpx
import openai
import pytest
import redis

from serve.settings import ProviderSettings, TenantPolicy
from tests.support.fake_openai import FakeOpenAIServer

REDIS_DB_URL = os.environ.get("TIERWISE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
# The main application's tenants with a policy of their own (test_tenants.py); keys are made per test.
TENANTS = {
    "it-rpm": TenantPolicy(requests_per_minute=2),
    "it-tpm": TenantPolicy(tokens_per_minute=40),
    "it-spend": TenantPolicy(spend_per_day_usd=0.000001),
    "it-redact": TenantPolicy(pii="redact"),
    "it-keep": TenantPolicy(pii="keep_in_cluster"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} never became ready")


@pytest.fixture(scope="session")
def provider():
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture(scope="session")
def private_redis():
    """A redis-server of our own, so a test can take it away."""
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield proc, f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def cluster(settings, provider, private_redis):
    """Start Ray and Serve, deploy both applications; yield their base URLs and the key prefix."""
    import ray
    from ray import serve

    from serve.app import build_app

    prefix = f"tw-it-{uuid.uuid4().hex[:8]}"
    main = settings.model_copy(deep=True)
    main.store.backend, main.store.url, main.store.prefix = "redis", REDIS_DB_URL, prefix
    main.tier3.providers = [ProviderSettings(name="fake", base_url=provider.base_url, model="fake-frontier",
                                             api_key_env="TIERWISE_TEST_NO_KEY", allow_no_key=True,
                                             timeout_s=1.5, max_retries=1)]
    main.tenants.tenants = TENANTS
    isolated = settings.model_copy(deep=True)
    isolated.store.backend, isolated.store.url = "redis", private_redis[1]
    isolated.router.placement, isolated.tier1.placement = "deployment", "deployment"
    for section in (isolated.http, isolated.router.batching, isolated.tier1.batching):
        section.num_cpus = 0  # both apps share the 2 CPUs of this machine
    # Two gateway replicas, so that metrics are seen summed across replicas (test_metrics.py).
    isolated.http.capacity.num_replicas = 2

    port = free_port()
    # Logical CPUs: a tier-2 vLLM replica reserves 1.5 (its actor and its engine's bundle), and the
    # autoscaling test adds a second; their threads are capped at one each (OMP_NUM_THREADS=1).
    # Metrics reach the node's exporter every second rather than every ten (test_metrics.py waits for them).
    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False,
             _system_config={"metrics_report_interval_ms": 1000})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(main), name="main", route_prefix="/")
    serve.run(build_app(isolated), name="isolated", route_prefix="/isolated")
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/readyz")
    wait_ready(f"{base}/isolated/readyz")
    yield {"main": base, "isolated": f"{base}/isolated", "prefix": prefix}
    serve.shutdown()
    ray.shutdown()
    r = redis.Redis.from_url(REDIS_DB_URL)
    keys = list(r.scan_iter(match=f"{prefix}:*"))
    if keys:
        r.delete(*keys)


@pytest.fixture(scope="session")
def base_url(cluster) -> str:
    return cluster["main"]


@pytest.fixture(scope="session")
def client(base_url) -> openai.OpenAI:
    """The official OpenAI client against the gateway."""
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="session")
def make_key(cluster):
    """``make_key(tenant, admin=False)``: a new API key of the main application."""
    from serve.tenancy.auth import KeyAdmin

    admin = KeyAdmin(REDIS_DB_URL, cluster["prefix"])
    return lambda tenant, admin_key=False: admin.create(tenant, admin_key)[1]


@pytest.fixture()
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def redis_db(cluster):
    """The shared Redis database the main application writes to, and its key prefix."""
    return redis.Redis.from_url(REDIS_DB_URL, decode_responses=True), cluster["prefix"]
