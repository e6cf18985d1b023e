"""The ``tierwise`` command line: serve, route, keys, k8s render, train, calibrate, eval, export-encoder."""

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

from serve.proxy_env import proxy_env
from serve.settings import ConfigError, load_settings

cli = typer.Typer(help="Tierwise: answer every LLM request on the cheapest tier that answers it well.",
                  no_args_is_help=True)
console = Console(stderr=True)
# The Serve application `tierwise serve` runs.
APP_NAME = "tierwise"
ConfigOption = typer.Option(None, "--config", "-c", help="Settings YAML (default: configs/tierwise.yaml or "
                                                         "$TIERWISE_CONFIG)")


def _settings(config: Optional[Path]):
    try:
        return load_settings(config)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


@cli.command()
def serve(config: Optional[Path] = ConfigOption,
          host: Optional[str] = typer.Option(None, help="Bind address (default: http.host)"),
          port: Optional[int] = typer.Option(None, help="Port (default: http.port)")) -> None:
    """Start Ray locally and run the gateway until interrupted."""
    settings = _settings(config)
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

    router = Router.from_settings(_settings(config))
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


@cli.command("export-encoder")
def export_encoder_cmd(force: bool = typer.Option(False, help="Rebuild even if the artefact exists"),
                       config: Optional[Path] = ConfigOption) -> None:
    """Export the packaged MiniLM to int8 ONNX (what ``make setup`` runs)."""
    from models.encoder_export import export_encoder

    path = export_encoder(_settings(config).encoder.model_dir, force=force)
    console.print(f"encoder artefact: {path}")


@cli.command("build-tiny-llm")
def build_tiny_llm_cmd(out: Path = typer.Option(Path("models/artifacts/tiny-llm"), help="Output folder"),
                       force: bool = typer.Option(False, help="Rebuild even if the model exists")) -> None:
    """Build the tiny random Llama, its tokenizer and LoRA adapters that tier 2 serves on CPU (what
    ``make setup`` runs; seconds, about 1 MB)."""
    from models.tiny_llm import build_tiny_llm

    console.print(f"tiny Llama: {build_tiny_llm(out, force=force) / 'model'}")


@cli.command()
def train(only: list[str] = typer.Option(None, help="Steps to run (default all, in order): finetune, export, "
                                                    "refit_span, refit_taggers, calibrate, quality, fixtures"),
          epochs: float = typer.Option(2.0, help="Fine-tuning epochs over the training rows"),
          seed: int = typer.Option(0, help="Seed of the data sampling and of training"),
          config: Optional[Path] = ConfigOption) -> None:
    """Rebuild the multi-task encoder, its heads and their calibration from ``../shared/datasets`` (or
    $TIERWISE_DATASETS): fine-tune (~60 minutes on 2 cores), export to int8 ONNX, refit the reading head and the taggers, calibrate,
    fit the quality heads (~5 minutes), refresh the test fixtures."""
    from models.finetune import TrainConfig
    from models.train import STEPS, train_all

    logging.basicConfig(level=logging.INFO)
    settings = _settings(config)
    report = train_all(settings.encoder.model_dir, Path(settings.router.heads_dir), tuple(only or STEPS),
                       TrainConfig(seed=seed, epochs=epochs))
    print(json.dumps(report, indent=2))


@cli.command()
def calibrate(tier3_share: Optional[float] = typer.Option(None, min=0, max=1, help="Target share of all requests "
                                                          "answered on tier 3"),
              budget_per_1k: Optional[float] = typer.Option(None, min=0, help="Target cost in USD per 1,000 requests"),
              requests: Optional[Path] = typer.Option(None, help="JSONL of requests ({\"messages\": [...]} or "
                                                      "{\"text\": ...}, optional output_tokens); default: the "
                                                      "held-out calibration split of the routing set"),
              tier2_model: Optional[str] = typer.Option(None, help="Priced model for tier 2 (default: the first "
                                                        "tier-2 model, else qwen2.5-7b-instruct)"),
              tier3_model: Optional[str] = typer.Option(None, help="Priced model for tier 3 (default: the first "
                                                        "provider's, else the price table's reference)"),
              dry_run: bool = typer.Option(False, help="Report without writing the config"),
              config: Optional[Path] = ConfigOption) -> None:
    """Fit router.quality.threshold to a tier-3 share or a cost budget and write it to the config; the report
    gives the tier mix and cost on held-out requests."""
    from models.instruction_data import build_requests
    from models.quality_calibration import (DEFAULT_OUTPUT_TOKENS, TierPrices, calibrate as fit, read_requests,
                                            route_requests, write_threshold)
    from models.router import RouteInput, Router
    from serve.pricing import PriceTable
    from serve.settings import DEFAULT_CONFIG

    if (tier3_share is None) == (budget_per_1k is None):
        console.print("[red]give exactly one of --tier3-share and --budget-per-1k[/red]")
        raise typer.Exit(2)
    settings = _settings(config)
    config_path = Path(config or os.environ.get("TIERWISE_CONFIG", DEFAULT_CONFIG))
    if requests is None:
        examples = build_requests("calib")
        inputs, outputs = [RouteInput(e.user, "", e.system) for e in examples], [DEFAULT_OUTPUT_TOKENS] * len(examples)
    else:
        try:
            inputs, outputs = read_requests(requests)
        except (OSError, ValueError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from exc
    table = PriceTable.load(settings.pricing.path)
    tier2 = tier2_model or (settings.tier2.models[0].name if settings.tier2.models else "qwen2.5-7b-instruct")
    tier3 = tier3_model or (settings.tier3.providers[0].model if settings.tier3.providers else table.reference_model)
    price = lambda model: (table.price(model).input, table.price(model).output)  # noqa: E731
    prices = TierPrices(price(settings.tier1.model_name), price(tier2), price(tier3))
    routed = route_requests(Router.from_settings(settings), inputs, outputs)
    report = fit(routed, [f"{i.system}\n{i.text}\n{i.context}" for i in inputs], tier3_share=tier3_share,
                 budget_per_1k=budget_per_1k, prices=prices)
    report["priced_models"] = {"tier1": settings.tier1.model_name, "tier2": tier2, "tier3": tier3}
    print(json.dumps(report, indent=2))
    if not dry_run:
        target = f"tier-3 share {tier3_share}" if tier3_share is not None else f"${budget_per_1k} per 1,000 requests"
        source = str(requests) if requests else "the routing set's calibration split"
        held = report["held_out"]
        write_threshold(config_path, report["threshold"],
                        f"{target} on {len(routed):,} requests of {source}; held out: tiers "
                        f"{held['mix']}, ${held.get('cost_per_1k_usd', 0):.2f} per 1,000")
        console.print(f"wrote router.quality.threshold = {report['threshold']} to {config_path}")


keys_cli = typer.Typer(help="API keys: each maps to a tenant, whose conversations only its keys can read.",
                       no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


def _key_admin(config: Optional[Path]):
    from serve.auth import KeyAdmin

    settings = _settings(config)
    return KeyAdmin(settings.store.url, settings.store.prefix)


@keys_cli.command("create")
def keys_create(tenant: str = typer.Option(..., help="The tenant the key acts for"),
                admin: bool = typer.Option(False, "--admin", help="May read every tenant's usage"),
                config: Optional[Path] = ConfigOption) -> None:
    """Create a key for TENANT and print it (only its hash is stored: it is shown this once)."""
    try:
        record, key = _key_admin(config).create(tenant, admin)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    kind = "admin key" if record.admin else "key"
    console.print(f"{kind} {record.id} for tenant {record.tenant}; store it now, it is not shown again:")
    print(key)


@keys_cli.command("list")
def keys_list(config: Optional[Path] = ConfigOption) -> None:
    """Every key's id, tenant and creation time (never the key)."""
    table = Table("id", "tenant", "admin", "created")
    for record in _key_admin(config).list():
        table.add_row(record.id, record.tenant, "yes" if record.admin else "",
                      time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.created)))
    Console().print(table)


@keys_cli.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id, as `tierwise keys list` shows it"),
                config: Optional[Path] = ConfigOption) -> None:
    """Revoke a key; gateways refuse it within seconds."""
    if not _key_admin(config).revoke(key_id):
        console.print(f"[red]no key with id {key_id}[/red]")
        raise typer.Exit(1)
    console.print(f"revoked key {key_id}")


eval_cli = typer.Typer(help="Evaluate Tierwise's models on the test splits of the data folder.", no_args_is_help=True)
cli.add_typer(eval_cli, name="eval")


@eval_cli.command("tier1")
def eval_tier1(out: Path = typer.Option(..., "--out", help="Folder for report.md and figures.json"),
               limit: Optional[int] = typer.Option(None, help="Rows sampled from each test set (a smoke run)"),
               max_requests: Optional[int] = typer.Option(None, help="Answer-fit requests to send (default: all "
                                                                     "of the held-out set)"),
               config: Optional[Path] = ConfigOption) -> None:
    """Tier-1 report: each test set beside its reference, calibration, latency per head, answer fit."""
    from models.tier1_eval import run_report

    logging.basicConfig(level=logging.INFO)
    # One line per in-process request of the answer-fit section would bury the report's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    figures = run_report(_settings(config), out, max_requests, limit)
    console.print(f"wrote {out / 'report.md'} and {out / 'figures.json'}")
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}, indent=2))


@eval_cli.command("router")
def eval_router(out: Path = typer.Option(..., "--out", help="Folder for report.md, figures.json and the plots"),
                limit: Optional[int] = typer.Option(None, help="Prompts sampled from each set (a smoke run)"),
                config: Optional[Path] = ConfigOption) -> None:
    """Router report: quality-aware routing on RouteLLM's and RouterBench's benchmarks by their protocols."""
    from models.router_eval import run_report

    logging.basicConfig(level=logging.INFO)
    figures = run_report(_settings(config), out, limit)
    console.print(f"wrote {out / 'report.md'} and {out / 'figures.json'}")
    print(json.dumps(figures, indent=2))


k8s_cli = typer.Typer(help="Kubernetes (KubeRay): the RayService manifest, rendered from configs/.",
                      no_args_is_help=True)
cli.add_typer(k8s_cli, name="k8s")


@k8s_cli.command("render")
def k8s_render(out: Optional[Path] = typer.Option(None, "--out", help="Manifest to write, or to check with --check "
                                                  "(default: k8s/rayservice.yaml)"),
               check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 with a diff when the manifest "
                                                                 "differs from what configs/ render"),
               config: Optional[Path] = typer.Option(None, "--config", "-c", help="The application's settings, a file "
                                                     "in the repository (default: configs/k8s.yaml's config)"),
               tier2_models: Optional[Path] = typer.Option(None, "--tier2-models", help="Tier-2 models file in the "
                                                           "repository (default: configs/k8s.yaml's tier2_models)"),
               k8s_config: Optional[Path] = typer.Option(None, "--k8s-config", help="Cluster settings: image, groups, "
                                                         "Redis (default: configs/k8s.yaml)")) -> None:
    """Render the KubeRay RayService, its Serve config included, from configs/ (see README, "Deploy on
    Kubernetes")."""
    from rich.markup import escape

    from serve.k8s import DEFAULT_K8S_CONFIG, DEFAULT_MANIFEST, drift, render

    out = out or DEFAULT_MANIFEST
    try:
        text = render(k8s_config or DEFAULT_K8S_CONFIG, config, tier2_models)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    if check:
        diff = drift(out, text)
        if diff:
            print(diff, end="")
            console.print(f"[red]{escape(str(out))} is out of date:[/red] run `tierwise k8s render` with the same "
                          f"options and commit the result")
            raise typer.Exit(1)
        console.print(f"{escape(str(out))} is up to date")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(f"wrote {escape(str(out))}")


def main() -> None:
    """Console-script entry point."""
    cli()
