"""Serve's HAProxy ingress, made private to one Ray instance.

Ray Serve's HAProxy mode (``RAY_SERVE_ENABLE_HA_PROXY``) uses fixed ports and paths by default: its stats and
metrics pages (8404, 9101), the fallback proxy HAProxy sends to while no replica is up (8500, gRPC 9500),
and its config and sockets under /tmp/haproxy-serve. A second Ray instance on the same machine (a second
gateway, or the test suite next to ``tierwise serve``) then answers the first one's requests: seen here as
one gateway's /readyz answered by another's replicas while it started. :func:`proxy_env` gives an instance
ports and a folder of its own; the variables must be set before Ray starts (its processes read them at
import).
"""

from __future__ import annotations

import socket
import tempfile


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxy_env(directory: str | None = None) -> dict[str, str]:
    """The variables for one Ray instance's HAProxy: free ports, and files in ``directory`` (a new folder
    under /tmp by default, kept short: Unix socket paths are limited to about 100 bytes)."""
    d = directory or tempfile.mkdtemp(prefix="twh-")
    return {
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{d}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{d}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": d,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{d}/server-state",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{d}/metrics.sock",
    }
