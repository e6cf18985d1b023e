"""Gateway commands: ``tierwise serve`` runs it on a local Ray; ``tierwise route`` runs its router in-process."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from serve.cli.common import ConfigOption, console, load_or_exit
from serve.ops.proxy_env import proxy_env

cli = typer.Typer()
# The Serve application `tierwise serve` runs.
APP_NAME = "tierwise"


@cli.command()
def serve(config: Optional[Path] = ConfigOption,
          host: Optional[str] = typer.Option(None, help="Bind address (default: http.host)"),
          port: Optional[int] = typer.Option(None, help="Port (default: http.port)")) -> None:
    """Start Ray locally and run the gateway until interrupted."""
    settings = load_or_exit(config)
    # The HAProxy ingress cuts Serve's per-request floor from ~7 ms to ~2 ms on this class of machine.
    os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", str(settings.http.drain_s))
    # HAProxy's ports and files of its own: another Ray instance on this machine keeps its own.
    for name, value in proxy_env().items():
        os.environ.setdefault(name, value)
    import ray
    from ray import serve as ray_serve

    from serve.app import build_app

    logging.basicConfig(level=logging.INFO)
    ray.init(address=os.environ.get("RAY_ADDRESS", "local"), include_dashboard=False)
    ray_serve.start(http_options={"host": host or settings.http.host, "port": port or settings.http.port})
    ray_serve.run(build_app(settings), name=APP_NAME, route_prefix="/")
    url = f"http://{host or settings.http.host}:{port or settings.http.port}"
    _report_readiness(url)
    console.print(f"Tierwise is serving on {url} (Ctrl-C stops it)")
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        # Serve's proxy (HAProxy) is a separate process: a second signal cutting the shutdown short
        # would leave it holding the port.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # The application first, with the proxy still up: its replicas drain (http.drain_s) and finish their
        # requests in flight (capacity.graceful_shutdown_timeout_s). serve.shutdown() alone stops HAProxy at
        # once, cutting the connections of those requests.
        ray_serve.delete(APP_NAME)
        ray_serve.shutdown()
        ray.shutdown()


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def _report_readiness(url: str) -> None:
    """Say, on the console, which store the gateway uses and whether tier 3 can answer.

    Serve's replicas log to files (throughput mode), so the operator would not see it otherwise.
    """
    import httpx

    ready = httpx.get(f"{url}/readyz", timeout=30).json()
    store = ready.get("store_backend")
    if store == "memory":
        console.print("[yellow]conversation store: in-process memory (Redis did not answer): history is not "
                      "shared between replicas and is lost on restart; set TIERWISE_STORE__URL[/yellow]")
    else:
        console.print(f"conversation store: {store}")
    for model, why in (ready.get("tier2_unplaced") or {}).items():
        console.print(f"[yellow]tier 2: {model} cannot be placed ({why}); its traffic goes to the next tier[/yellow]")
    if ready.get("tier2"):
        console.print(f"tier 2: {', '.join(ready['tier2'])}")
    if not ready.get("tier3_configured"):
        console.print("[yellow]tier 3: no provider configured; tier-3 requests get a 503 saying how to add "
                      "one (tier3.providers in configs/tierwise.yaml)[/yellow]")


@cli.command()
def route(text: str = typer.Argument(..., help="The user message to route"),
          context: str = typer.Option("", help="Earlier turns of the conversation, as one text"),
          as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
          config: Optional[Path] = ConfigOption) -> None:
    """Route one message in-process (the server's router code, without Ray)."""
    from models.router import RouteInput, Router

    router = Router.from_settings(load_or_exit(config))
    router.route_batch([RouteInput("warm-up")])
    started = time.perf_counter()
    (decision,) = router.route_batch([RouteInput(text, context)])
    latency_ms = (time.perf_counter() - started) * 1000
    out = {"tier": decision.tier, "task": decision.task, "confidence": round(decision.confidence, 4),
           "reason": decision.reason, "latency_ms": round(latency_ms, 3),
           "entities": [e.as_dict() for e in decision.entities], **decision.explain()}
    if as_json:
        print(json.dumps(out))
        return
    table = Table(show_header=False)
    for key, value in out.items():
        table.add_row(key, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    Console().print(table)
