"""What every ``tierwise`` command shares: the console, the ``--config`` option and settings that fail with a
clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from serve.settings import ConfigError, Settings, load_settings

console = Console(stderr=True)
ConfigOption = typer.Option(None, "--config", "-c", help="Settings YAML (default: configs/tierwise.yaml or "
                                                         "$TIERWISE_CONFIG)")


def load_or_exit(config: Optional[Path]) -> Settings:
    """The validated settings; a configuration error is printed and exits with status 2."""
    try:
        return load_settings(config)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
