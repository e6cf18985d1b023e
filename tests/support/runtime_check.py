"""Runs the gateway's runtime alone and prints what it answered, as one JSON object.

Usage: ``python runtime_check.py [BLOCKED]``, BLOCKED a comma-separated list of top-level modules that must
not be importable (the optional extras'). It builds the gateway's services on the embedded defaults (the
settings file is ``TIERWISE_CONFIG`` or the installed default), sends a tier-1 chat request and a
``/v1/route`` through the real FastAPI app, runs ``tierwise route`` through the real CLI, and builds the Serve
application graph. It imports nothing from the tests, so a fresh venv with only ``pip install .`` runs it.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import json
import sys


class BlockedModules(importlib.abc.MetaPathFinder):
    """Refuses to import the given top-level modules, as if they were not installed."""

    def __init__(self, names: set[str]):
        self.names = frozenset(names)
        self.refused: set[str] = set()

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in self.names:
            self.refused.add(top)
            raise ModuleNotFoundError(f"No module named {fullname!r} (an optional extra's)", name=fullname)
        return None


SENTIMENT = "What is the sentiment of this review: 'I loved this film, every scene was wonderful.'"


async def _ask(app) -> dict:
    import httpx

    body = {"model": "auto", "messages": [{"role": "user", "content": SENTIMENT}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://runtime") as client:
        chat = await client.post("/v1/chat/completions", json=body)
        route = await client.post("/v1/route", json=body)
    return {"chat_status": chat.status_code, "chat": chat.json(), "route_status": route.status_code,
            "route": route.json()}


def main() -> None:
    blocker = BlockedModules({n for n in (sys.argv[1] if len(sys.argv) > 1 else "").split(",") if n})
    sys.meta_path.insert(0, blocker)

    from typer.testing import CliRunner

    from models.router import Router
    from models.tier1 import Tier1Models
    from serve.api.routes import app, bind_services
    from serve.app import build_app
    from serve.cli import cli
    from serve.services import build_local_services
    from serve.settings import load_settings

    settings = load_settings()
    router = Router.from_settings(settings)
    tier1 = Tier1Models.from_settings(settings, router.encoder, router.faq)
    bind_services(build_local_services(settings, router, tier1, "no tier-3 provider (runtime check)"))
    out = asyncio.run(_ask(app))
    routed = CliRunner().invoke(cli, ["route", SENTIMENT, "--json"])
    out["cli_exit"] = routed.exit_code
    out["cli"] = json.loads(routed.stdout) if routed.exit_code == 0 else routed.output
    out["serve_app"] = type(build_app(settings)).__name__
    out["refused"] = sorted(blocker.refused)
    out["loaded"] = sorted(m for m in sys.modules if m.startswith(("models.training", "models.evaluation")))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
