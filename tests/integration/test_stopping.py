"""Stopping: ``tierwise serve`` on SIGTERM (what Kubernetes sends a pod) finishes the requests in flight, then
exits well inside Kubernetes' default 30 s grace period, and lets go of its port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from serve.ops.proxy_env import proxy_env
from tests.integration.conftest import free_port, wait_ready

GRACE_PERIOD_S = 30
IN_FLIGHT_S = 4.0
SETTLE_S = 8.0

pytestmark = pytest.mark.own_ray



@pytest.fixture()
def gateway(provider, tmp_path):
    """``tierwise serve`` in a process of its own, on its own Ray instance, with the fake provider as tier 3."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "TIERWISE_HTTP__PORT": str(port),
        "TIERWISE_STORE__BACKEND": "memory",
        "TIERWISE_TIER3__PROVIDERS": json.dumps([{
            "name": "fake", "base_url": provider.base_url, "model": "fake-frontier",
            "api_key_env": "TIERWISE_TEST_NO_KEY", "allow_no_key": True, "timeout_s": 20, "max_retries": 0}]),
        # Its replicas' ports (Serve counts up from 30000 and 40000 on each instance: the test cluster's
        # replicas hold the first ones).
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "28000", "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "28999",
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "29000", "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "29999",
    }
    env.pop("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", None)  # the gateway's own http.drain_s applies
    for name in proxy_env():
        env.pop(name, None)  # `tierwise serve` gives its HAProxy ports and files of its own
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("tierwise")), "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=240)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()["store_backend"] == "memory"
        # Serve answers through its fallback proxy until the replica registers, then reloads HAProxy; a
        # connection still held by the superseded HAProxy process is cut when Serve stops: this test is about
        # a gateway in service, not one starting.
        time.sleep(SETTLE_S)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_sigterm_drains_the_requests_in_flight_and_stops_within_the_grace_period(gateway, provider):
    proc, base = gateway
    provider.delay_next(IN_FLIGHT_S)
    outcome = {}

    def in_flight() -> None:
        r = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
            "model": "fake-frontier", "messages": [{"role": "user", "content": "Compare these two strategies."}]})
        outcome["status"], outcome["body"] = r.status_code, r.json()

    client = threading.Thread(target=in_flight)
    client.start()
    time.sleep(1.0)  # the request has reached the provider, which holds it for IN_FLIGHT_S
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    client.join(timeout=GRACE_PERIOD_S)
    proc.wait(timeout=GRACE_PERIOD_S + 5)
    stop_s = time.monotonic() - stopped_at

    assert outcome.get("status") == 200, outcome
    assert outcome["body"]["tierwise"]["tier"] == 3
    assert stop_s < GRACE_PERIOD_S, f"stopping took {stop_s:.1f} s"
    print(f"stop with one request in flight ({IN_FLIGHT_S} s left): {stop_s:.1f} s")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/healthz", timeout=2)
