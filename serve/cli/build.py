"""Build commands: export the encoder, build the tiny tier-2 model, train, calibrate and evaluate.

They need the ``build`` extra and the data folder; each imports training and evaluation inside the command,
so the production image, which has neither, still runs every other command.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import typer

from serve.cli.common import ConfigOption, console, load_or_exit

cli = typer.Typer()


@cli.command("export-encoder")
def export_encoder_cmd(force: bool = typer.Option(False, help="Rebuild even if the artefact exists"),
                       config: Optional[Path] = ConfigOption) -> None:
    """Export the packaged MiniLM to int8 ONNX (what ``make setup`` runs)."""
    from models.training.export import export_encoder

    path = export_encoder(load_or_exit(config).encoder.model_dir, force=force)
    console.print(f"encoder artefact: {path}")


@cli.command("build-tiny-llm")
def build_tiny_llm_cmd(out: Path = typer.Option(Path("models/artifacts/tiny-llm"), help="Output folder"),
                       force: bool = typer.Option(False, help="Rebuild even if the model exists")) -> None:
    """Build the tiny random Llama, its tokenizer and LoRA adapters that tier 2 serves on CPU (what
    ``make setup`` runs; seconds, about 1 MB)."""
    from models.training.tiny_llm import build_tiny_llm

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
    from models.training.finetune import TrainConfig
    from models.training.pipeline import STEPS, train_all

    logging.basicConfig(level=logging.INFO)
    settings = load_or_exit(config)
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
    from models.router import RouteInput, Router
    from models.training.requests.render import build_requests
    from models.training.thresholds import (
        DEFAULT_OUTPUT_TOKENS,
        TierPrices,
        read_requests,
        route_requests,
        write_threshold,
    )
    from models.training.thresholds import calibrate as fit
    from serve.settings import DEFAULT_CONFIG

    if (tier3_share is None) == (budget_per_1k is None):
        console.print("[red]give exactly one of --tier3-share and --budget-per-1k[/red]")
        raise typer.Exit(2)
    settings = load_or_exit(config)
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
    table = settings.pricing.table()
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


eval_cli = typer.Typer(help="Evaluate Tierwise's models on the test splits of the data folder.", no_args_is_help=True)


@eval_cli.command("tier1")
def eval_tier1(out: Path = typer.Option(..., "--out", help="Folder for report.md and figures.json"),
               limit: Optional[int] = typer.Option(None, help="Rows sampled from each test set (a smoke run)"),
               max_requests: Optional[int] = typer.Option(None, help="Answer-fit requests to send (default: all "
                                                                     "of the held-out set)"),
               config: Optional[Path] = ConfigOption) -> None:
    """Tier-1 report: each test set beside its reference, calibration, latency per head, answer fit."""
    from models.evaluation.tier1 import run_report

    logging.basicConfig(level=logging.INFO)
    # One line per in-process request of the answer-fit section would bury the report's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    figures = run_report(load_or_exit(config), out, max_requests, limit)
    console.print(f"wrote {out / 'report.md'} and {out / 'figures.json'}")
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}, indent=2))


@eval_cli.command("router")
def eval_router(out: Path = typer.Option(..., "--out", help="Folder for report.md, figures.json and the plots"),
                limit: Optional[int] = typer.Option(None, help="Prompts sampled from each set (a smoke run)"),
                config: Optional[Path] = ConfigOption) -> None:
    """Router report: quality-aware routing on RouteLLM's and RouterBench's benchmarks by their protocols."""
    from models.evaluation.router import run_report

    logging.basicConfig(level=logging.INFO)
    figures = run_report(load_or_exit(config), out, limit)
    console.print(f"wrote {out / 'report.md'} and {out / 'figures.json'}")
    print(json.dumps(figures, indent=2))


@cli.command()
def replay(mix: Path = typer.Option(Path("configs/replay/default.yaml"), help="Mix file: slices: {name: share}"),
           out: Path = typer.Option(..., "--out", help="Folder for report.md and figures.json"),
           url: str = typer.Option("http://127.0.0.1:8000", help="The running gateway (make serve-replay)"),
           limit: int = typer.Option(1000, min=1, help="Requests to send"),
           rate: float = typer.Option(20.0, min=0.1, help="Requests a second (open loop)"),
           stream_share: float = typer.Option(0.25, min=0, max=1, help="Share of the requests streamed"),
           seed: int = typer.Option(0, help="Seed of the sampling and of which requests stream"),
           config: Optional[Path] = ConfigOption) -> None:
    """Send a recorded workload through the running gateway and report quality retained and cost cut from its
    ledger (the gateway must run with the recorded engines: make serve-replay)."""
    from rich.progress import Progress

    from models.evaluation.replay.report import LedgerMismatch, run_report

    logging.basicConfig(level=logging.WARNING)
    settings = load_or_exit(config)
    with Progress(console=console) as bar:
        task = bar.add_task("replay", total=limit)
        try:
            run_report(settings, mix, out, url, limit, rate, stream_share, seed,
                       progress=lambda: bar.advance(task))
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from exc
        except LedgerMismatch as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
    console.print(f"wrote {out / 'report.md'} and {out / 'figures.json'}")
    print((out / "report.md").read_text())
