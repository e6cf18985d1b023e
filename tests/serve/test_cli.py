"""The CLI: `tierwise route TEXT --json` runs the router in-process, without Ray."""

from __future__ import annotations

import json
import sys

from typer.testing import CliRunner

from serve.cli import cli


def test_route_json():
    result = CliRunner().invoke(cli, ["route", "Compare these two business strategies.", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"tier", "task", "confidence", "reason", "latency_ms"} <= set(out)
    assert (out["tier"], out["task"]) == (3, "reasoning")
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


def test_bad_config_exits_with_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("router:\n  context_weight: 7\n")
    result = CliRunner().invoke(cli, ["route", "hi", "--config", str(bad)])
    assert result.exit_code == 2
    assert "router.context_weight" in result.output
