"""``tierwise keys``: create, list and revoke tenants' API keys (stored hashed in Redis)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from serve.cli.common import ConfigOption, console, load_or_exit

cli = typer.Typer(help="API keys: each maps to a tenant, whose conversations only its keys can read.",
                       no_args_is_help=True)


def _key_admin(config: Optional[Path]):
    from serve.tenancy.auth import KeyAdmin

    settings = load_or_exit(config)
    return KeyAdmin(settings.store.url, settings.store.prefix)


@cli.command("create")
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


@cli.command("list")
def keys_list(config: Optional[Path] = ConfigOption) -> None:
    """Every key's id, tenant and creation time (never the key)."""
    table = Table("id", "tenant", "admin", "created")
    for record in _key_admin(config).list():
        table.add_row(record.id, record.tenant, "yes" if record.admin else "",
                      time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.created)))
    Console().print(table)


@cli.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id, as `tierwise keys list` shows it"),
                config: Optional[Path] = ConfigOption) -> None:
    """Revoke a key; gateways refuse it within seconds."""
    if not _key_admin(config).revoke(key_id):
        console.print(f"[red]no key with id {key_id}[/red]")
        raise typer.Exit(1)
    console.print(f"revoked key {key_id}")
