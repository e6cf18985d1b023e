"""A short headless Locust run of ``loadtests/locustfile.py`` against the session's gateway (tier 3 answered
by the fake provider): the mixed workload must run without a failed request, and more than one tier must
answer it.

Locust runs as a subprocess: it monkey-patches the standard library with gevent, which must not happen
inside the process that holds the Ray driver and pytest's asyncio loops.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests.support.datasets import needs_datasets

ROOT = Path(__file__).resolve().parents[2]
LOAD_SECONDS = 15


@needs_datasets
def test_locust_mixed_workload_has_no_failures(base_url, tmp_path):
    assert base_url.startswith("http://127.0.0.1:")
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
               "--host", base_url, "-u", "4", "-r", "4", "-t", f"{LOAD_SECONDS}s", "--stop-timeout", "10",
               "--tier1-share", "0.6", "--tier3-share", "0.2", "--stream-share", "0.3",
               "--csv", str(tmp_path / "locust"), "--only-summary", "--exit-code-on-error", "1"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=LOAD_SECONDS + 90)
    with open(tmp_path / "locust_stats.csv", newline="") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f) if r["Name"] != "Aggregated"}
    with open(tmp_path / "locust_failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    assert run.returncode == 0 and not failures, (failures, run.stderr[-3000:])

    count = {key: int(r["Request Count"]) for key, r in rows.items()}
    sent = sum(n for (kind, _), n in count.items() if kind == "POST")
    answered = {name: n for (kind, name), n in count.items() if kind == "TIER"}
    assert sent >= 20, count
    # Every request was answered, and each answer counted once under the tier that gave it.
    assert sum(answered.values()) == sent, count
    assert answered.get("answered tier1") and answered.get("answered tier3"), answered
    assert any(kind == "TTFT" for kind, _ in count), count
