"""A two-node Ray cluster on loopback loses its worker node under traffic (``loadtests/node_loss.py``, a
shorter timeline): requests succeed again within a bounded time, Serve brings the lost gateway replica back
on a replacement node, and no answered turn is missing from Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from serve.settings import REPO_ROOT

RECOVERY_BOUND_S = 10
RESTORE_BOUND_S = 90

pytestmark = pytest.mark.own_ray



def test_losing_a_node_costs_a_bounded_outage_and_no_conversation(tmp_path):
    out = tmp_path / "node_loss.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run([sys.executable, str(REPO_ROOT / "loadtests" / "node_loss.py"), "--before-s", "8",
                          "--after-s", "8", "--restore-timeout-s", str(RESTORE_BOUND_S), "--log-dir", str(tmp_path),
                          "--out", str(out)], env=env, timeout=600, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    figures = json.loads(out.read_text())
    print(json.dumps(figures))
    assert figures["gateway_replicas_before_loss"] == {"RUNNING": 2}
    assert figures["requests_after_loss"] > 100
    assert figures["recovery_s"] <= RECOVERY_BOUND_S
    # Requests fail only while the lost replica was still in the proxy's table.
    assert figures["failed"] == figures["failed_after_loss"] <= 0.1 * figures["requests_after_loss"]
    assert figures["loss_noticed_s"] is not None and figures["replica_restored_s"] is not None
    assert figures["lost_turns"] == 0
