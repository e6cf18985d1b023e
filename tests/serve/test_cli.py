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


def test_keys_are_created_listed_and_revoked(tmp_path):
    import uuid

    import redis

    prefix = f"test-cli-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "keys.yaml"
    config.write_text(f"store:\n  url: redis://127.0.0.1:6379/15\n  prefix: {prefix}\n")
    try:
        created = CliRunner().invoke(cli, ["keys", "create", "--tenant", "acme", "--config", str(config)])
        assert created.exit_code == 0 and created.stdout.strip().startswith("tw-")
        listed = CliRunner().invoke(cli, ["keys", "list", "--config", str(config)])
        key_id = created.stdout.strip().split("-")[1]
        assert key_id in listed.stdout and "acme" in listed.stdout and created.stdout.strip() not in listed.stdout
        assert CliRunner().invoke(cli, ["keys", "revoke", key_id, "--config", str(config)]).exit_code == 0
        assert CliRunner().invoke(cli, ["keys", "revoke", key_id, "--config", str(config)]).exit_code == 1
    finally:
        redis.Redis.from_url("redis://127.0.0.1:6379/15").delete(f"{prefix}:apikeys")
