"""What the gateway benchmarks share: the environment a gateway runs in, a gateway on a local Ray instance,
percentiles, and the description of the machine a figure was measured on.

Import it before Ray or Serve: :func:`prepare` sets the variables they read when they are imported.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "loadtests" / "results"


def prepare(**environment: str) -> None:
    """The repository importable, offline model loading, and Serve's HAProxy ingress (what ``tierwise serve``
    uses), plus ``environment``; variables already set win."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    defaults = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_SERVE_ENABLE_HA_PROXY": "1",
                "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", **environment}
    for name, value in defaults.items():
        os.environ.setdefault(name, value)


def pct(values: list[float], q: float, digits: int = 3) -> float:
    """Percentile ``q`` of a list of seconds, in milliseconds."""
    return round(float(np.percentile(values, q)) * 1000, digits)


def machine() -> str:
    """The processor and its cores, as the results files record them."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


@contextlib.contextmanager
def local_gateway(settings, app_name: str = "tierwise", num_cpus: int | None = None) -> Iterator[int]:
    """The Tierwise application on a local Ray instance with an HAProxy of its own; yields its HTTP port and
    shuts Serve and Ray down after."""
    import ray
    from ray import serve

    from serve.app import build_app
    from serve.ops.proxy_env import free_port, proxy_env

    for name, value in proxy_env().items():
        os.environ.setdefault(name, value)
    port = free_port()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(settings), name=app_name, route_prefix="/")
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()
