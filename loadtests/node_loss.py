"""A real two-node Ray cluster on this machine losing a node under traffic.

    .venv/bin/python loadtests/node_loss.py            # writes loadtests/results/node_loss.json

What it does, each step a real process:

1. ``ray start --head`` and ``ray start --address=...`` (a worker node joining it), on loopback, each with
   ports of its own (another Ray instance may run here);
2. deploys the Tierwise application across both (two gateway replicas, at most one per node, so the worker
   holds one), with conversations in the real Redis;
3. sends conversation turns through the head node's proxy (``--rate`` per second, each turn in one of
   ``--conversations`` conversations), and after ``--before-s`` seconds kills the worker node's whole
   process group (raylet, its workers and the replica: a node lost, not stopped);
4. keeps the traffic going and records every request: which failed, and how long after the loss the
   requests succeed for good (``recovery_s``: from the kill to the end of the last failed request);
5. times how long Serve takes to notice the lost replica (``loss_noticed_s``), then starts a replacement
   worker node, as Kubernetes would replace the pod, and times how long Serve takes to have two gateway
   replicas running again (``replica_restored_s``, from the new node's start);
6. reads every conversation back from Redis and counts the turns lost: turns answered 200 whose messages
   are not in the store.

The figures are in the JSON it writes (and printed); ``tests/integration/test_node_loss.py`` runs it with a
short timeline and checks the bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serve.ops.proxy_env import free_port, proxy_env  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))
REDIS_URL = "redis://127.0.0.1:6379/13"
# What a node runs with: the proxy and replica settings `tierwise serve` uses, one thread per replica.
NODE_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2", "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            # The ports replicas listen on behind HAProxy: away from Serve's defaults (30000 and 40000 up), which
            # another Ray instance on this machine may hold.
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "26000", "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "26999",
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "27000", "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "27999"}
PROMPTS = ["Product is great!", "I absolutely hate this blender.", "Do you ship internationally?",
           "Classify the sentiment: 'The delivery was late and the box was crushed.'"]
# Ray's token authentication, as a production cluster runs it: one secret shared by the nodes and the driver.
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex}


class RayNode:
    """One ``ray start --block`` process group: a node that can be lost with everything it runs."""

    def __init__(self, log_dir: Path, name: str, head_address: str | None = None, gcs_port: int | None = None):
        ports = {flag: free_port() for flag in ("--node-manager-port", "--object-manager-port",
                                                "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                                "--metrics-export-port", "--runtime-env-agent-port")}
        low = free_port() // 100 * 100
        args = [RAY, "start", "--block", "--num-cpus=2", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                f"--min-worker-port={low}", f"--max-worker-port={low + 99}",
                *(f"{flag}={port}" for flag, port in ports.items())]
        if head_address is None:
            args += ["--head", f"--port={gcs_port}", "--include-dashboard=false",
                     f"--ray-client-server-port={free_port()}"]
        else:
            args += [f"--address={head_address}"]
        self.name, self.log = name, (log_dir / f"ray-{name}.log").open("w")
        # Each node's HAProxy gets ports and files of its own: the defaults, or ones inherited from another
        # Ray instance's environment, may be taken.
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | NODE_ENV | AUTH | proxy_env()
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill(self) -> None:
        """The node is lost: every process of it dies at once."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()


def forget_cluster(gcs_port: int) -> None:
    """Remove Ray's note of the current cluster when it is this one (``ray stop`` would, but it stops every
    Ray process on the machine): a later ``ray.init()`` without an address would try to join it."""
    from ray._private.utils import get_ray_address_file, read_ray_address

    if (read_ray_address() or "").endswith(f":{gcs_port}"):
        Path(get_ray_address_file(None)).unlink(missing_ok=True)


def wait_nodes(count: int, timeout: float = 120) -> None:
    import ray

    deadline = time.monotonic() + timeout
    while sum(1 for n in ray.nodes() if n["Alive"]) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} Ray nodes never came up")
        time.sleep(0.5)


def gateway_replicas() -> dict[str, int]:
    """The gateway's replicas by state, as Serve reports them."""
    from ray import serve

    app = serve.status().applications.get("tierwise")
    if app is None or "Gateway" not in app.deployments:
        return {}
    return {str(k): v for k, v in app.deployments["Gateway"].replica_states.items()}


def running(states: dict[str, int]) -> int:
    return sum(v for k, v in states.items() if k.endswith("RUNNING"))


def wait_for(condition, timeout: float) -> float | None:
    """Seconds until ``condition()`` holds, polled twice a second; None if it did not within ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.5)
    return None


@dataclass
class Outcome:
    at: float
    status: int
    conversation: str
    latency_s: float


@dataclass
class Traffic:
    """Conversation turns at a fixed rate, in a thread; every outcome kept."""

    base: str
    rate: float
    conversations: list[str]
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            i = 0
            while not self._stop.is_set():
                conversation = self.conversations[i % len(self.conversations)]
                started = time.monotonic()
                try:
                    r = client.post("/v1/chat/completions", headers={"X-Conversation-Id": conversation}, json={
                        "model": "auto", "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]})
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0  # no response at all: connection refused or reset, or a timeout
                self.outcomes.append(Outcome(started, status, conversation, time.monotonic() - started))
                i += 1
                self._stop.wait(max(0.0, 1 / self.rate - (time.monotonic() - started)))


def recovery_after(outcomes: list[Outcome], lost_at: float) -> float:
    """Seconds from the loss until requests succeed for good: the end of the last failed request sent after
    it (0 when none failed)."""
    ends = [o.at + o.latency_s - lost_at for o in outcomes if o.at >= lost_at and o.status != 200]
    return max(ends, default=0.0)


def lost_turns(outcomes: list[Outcome], prefix: str, tenant: str) -> int:
    """Turns answered 200 whose user message and answer are not both in the store."""
    r = redis.Redis.from_url(REDIS_URL)
    answered: dict[str, int] = {}
    for o in outcomes:
        if o.status == 200:
            answered[o.conversation] = answered.get(o.conversation, 0) + 1
    lost = 0
    for conversation, count in answered.items():
        stored = [json.loads(m) for m in r.lrange(f"{prefix}:{{t:{tenant}}}:conv:{conversation}", 0, -1)]
        users = sum(1 for m in stored if m.get("role") == "user")
        lost += max(0, count - users)
    return lost


def run(args) -> dict:
    os.environ.update(AUTH)  # read when Ray is imported
    import ray
    from ray import serve

    from serve.app import build_app
    from serve.settings import load_settings

    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    gcs_port, http_port = free_port(), free_port()
    head = RayNode(log_dir, "head", gcs_port=gcs_port)
    address = f"127.0.0.1:{gcs_port}"
    nodes = [head]
    prefix = f"tw-nodeloss-{uuid.uuid4().hex[:8]}"
    try:
        time.sleep(3)
        worker = RayNode(log_dir, "worker", head_address=address)
        nodes.append(worker)
        ray.init(address=address, logging_level="warning", log_to_driver=False)
        wait_nodes(2)
        settings = load_settings()
        settings.store.backend, settings.store.url, settings.store.prefix = "redis", REDIS_URL, prefix
        settings.http.capacity.num_replicas = 2
        settings.http.capacity.max_replicas_per_node = 1
        # The proxy on the head node only: both nodes share this machine's loopback address and port.
        serve.start(http_options={"host": "127.0.0.1", "port": http_port, "location": "HeadOnly"})
        started = time.monotonic()
        serve.run(build_app(settings), name="tierwise", route_prefix="/")
        deploy_s = time.monotonic() - started
        base = f"http://127.0.0.1:{http_port}"
        conversations = [f"nodeloss-{i}-{uuid.uuid4().hex[:6]}" for i in range(args.conversations)]
        traffic = Traffic(base, args.rate, conversations)
        traffic.start()
        time.sleep(args.before_s)
        before = gateway_replicas()
        lost_at = time.monotonic()
        worker.kill()
        noticed_s = wait_for(lambda: running(gateway_replicas()) < 2, args.restore_timeout_s)
        time.sleep(max(0.0, args.after_s - (time.monotonic() - lost_at)))
        replacement = RayNode(log_dir, "replacement", head_address=address)
        nodes.append(replacement)
        restored_s = wait_for(lambda: running(gateway_replicas()) >= 2, args.restore_timeout_s)
        time.sleep(3)
        traffic.stop()
        outcomes = traffic.outcomes
        during = [o for o in outcomes if o.at >= lost_at]
        failed = [o for o in outcomes if o.status != 200]
        figures = {
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "python": platform.python_version(), "ray": ray.__version__},
            "timeline_s": {"before_loss": args.before_s, "after_loss_before_replacement": args.after_s},
            "rate_per_s": args.rate,
            "deploy_s": round(deploy_s, 1),
            "gateway_replicas_before_loss": before,
            "requests": len(outcomes),
            "requests_after_loss": len(during),
            "failed": len(failed),
            "failed_statuses": sorted({o.status for o in failed}),
            "failed_after_loss": sum(1 for o in during if o.status != 200),
            "recovery_s": round(recovery_after(outcomes, lost_at), 2),
            "loss_noticed_s": None if noticed_s is None else round(noticed_s, 1),
            "replica_restored_s": None if restored_s is None else round(restored_s, 1),
            "lost_turns": lost_turns(outcomes, prefix, settings.http.tenant),
            "conversations": len(conversations),
            "p50_latency_ms": round(sorted(o.latency_s for o in outcomes)[len(outcomes) // 2] * 1000, 1),
        }
        serve.shutdown()
        return figures
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(nodes):
            node.kill()
        forget_cluster(gcs_port)
        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match=f"{prefix}:*"))
        if keys:
            r.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20, help="requests per second")
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--before-s", type=float, default=15, help="traffic before the worker node is lost")
    parser.add_argument("--after-s", type=float, default=20, help="traffic after the loss, before a new node joins")
    parser.add_argument("--restore-timeout-s", type=float, default=120)
    parser.add_argument("--log-dir", default="/tmp/tierwise-node-loss")
    parser.add_argument("--out", default=str(ROOT / "loadtests" / "results" / "node_loss.json"))
    args = parser.parse_args()
    figures = run(args)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
