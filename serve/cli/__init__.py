"""The ``tierwise`` command line: the gateway (serve, route), API keys, the KubeRay renderer, and the build
commands (export-encoder, build-tiny-llm, train, calibrate, eval)."""

from __future__ import annotations

import typer

from serve.cli import build, gateway, keys, ops

cli = typer.Typer(help="Tierwise: answer every LLM request on the cheapest tier that answers it well.",
                  no_args_is_help=True)
cli.add_typer(gateway.cli)
cli.add_typer(keys.cli, name="keys")
cli.add_typer(ops.cli, name="k8s")
cli.add_typer(build.cli)
cli.add_typer(build.eval_cli, name="eval")


def main() -> None:
    """Console-script entry point."""
    cli()
