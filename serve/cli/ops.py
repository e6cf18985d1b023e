"""``tierwise k8s render``: the KubeRay RayService rendered from configs/, and its drift check."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from serve.cli.common import console
from serve.settings import ConfigError

cli = typer.Typer(help="Kubernetes (KubeRay): the RayService manifest, rendered from configs/.",
                      no_args_is_help=True)


@cli.command("render")
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

    from serve.ops.k8s.render import DEFAULT_MANIFEST, drift, render
    from serve.ops.k8s.settings import DEFAULT_K8S_CONFIG

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
