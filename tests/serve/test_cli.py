"""The CLI: `tierwise route TEXT --json` runs the router in-process, without Ray."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from serve.cli import cli


def test_route_json_in_a_fresh_process_without_ray():
    code = ("import sys; from typer.testing import CliRunner; from serve.cli import cli; "
            "r = CliRunner().invoke(cli, ['route', 'Compare these two business strategies.', '--json']); "
            "print(r.stdout); sys.exit(r.exit_code or ('ray' in sys.modules and 3))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert {"tier", "task", "confidence", "reason", "latency_ms"} <= set(out)
    assert out["tier"] in (2, 3) and out["task"] in ("generation", "reasoning")


def test_bad_config_exits_with_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("router:\n  context_weight: 7\n")
    result = CliRunner().invoke(cli, ["route", "hi", "--config", str(bad)])
    assert result.exit_code == 2
    assert "router.context_weight" in result.output
