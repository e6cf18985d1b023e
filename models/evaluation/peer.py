"""semantic-router 1.1.1 beside Tierwise's router: the same task-routing rows, the peer's own figures.

A router report that only measures itself says little; an off-the-shelf semantic router on the same rows
says what the learned router adds. semantic-router pins openai<3 and the gateway needs openai 3, so the peer
lives in a venv of its own (``make peer``) and runs as a subprocess (``loadtests/peer_semantic_router.py``,
whose docstring gives the configuration). Run it on the task-routing split::

    .venv/bin/python -m models.evaluation.peer --out /tmp/peer.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "loadtests" / "peer_semantic_router.py"
PEER_VENV = REPO / ".venv-peer"
# A row is (text, tier), or (text, tier, stratum) where a stratum such as the task should balance the
# peer's sampling of utterances.
Row = tuple[str, int] | tuple[str, int, str]


class PeerUnavailable(RuntimeError):
    """The peer's venv is not built: a report can skip the peer rather than fail."""


def semantic_router_figures(train: Sequence[Row], test: Sequence[Row], encoder_dir: Path,
                            venv: Path = PEER_VENV, timeout_s: float = 1800.0) -> dict:
    """The peer's tier accuracy, decision latency, configuration and per-test-row tiers (None: unrouted).

    ``encoder_dir`` is a local all-MiniLM-L6-v2 folder: the peer gets the same base encoder Tierwise starts
    from, never one fetched from a hub. The subprocess runs on one thread, as the gateway's router is
    measured, so the latencies compare.
    """
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        raise PeerUnavailable(f"semantic-router peer venv {venv} is missing or incomplete: run `make peer`")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="tierwise-peer-") as tmp:
        in_path, out_path = Path(tmp) / "input.json", Path(tmp) / "output.json"
        in_path.write_text(json.dumps({"train": [list(r) for r in train], "test": [list(r) for r in test],
                                       "encoder_dir": str(encoder_dir)}))
        done = subprocess.run([str(python), str(SCRIPT), str(in_path), str(out_path)], env=env,
                              capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"semantic-router peer exited {done.returncode}:\n{done.stderr[-4000:]}")
        return json.loads(out_path.read_text())


def task_routing_rows(split: str) -> list[tuple[str, int, str]]:
    """The synthetic requests of one split as (text, tier, task). The peer sees one text per request, so the
    system prompt, which may hold the instruction, goes first on a line of its own."""
    from models.training.requests.render import build_requests
    from models.router import TASK_TIER

    return [(f"{ex.system}\n{ex.user}" if ex.system else ex.user, TASK_TIER[ex.task], ex.task)
            for ex in build_requests(split)]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the peer on the task-routing split and print its figures (``--out`` keeps the full output)."""
    from models.training.datasets import sample
    from models.training.base_model import packaged_model_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the full output, per-row tiers included, here")
    parser.add_argument("--limit", type=int, help="a seeded sample of this many test rows")
    args = parser.parse_args(argv)
    test = task_routing_rows("test")
    figures = semantic_router_figures(task_routing_rows("train"), sample(test, args.limit) if args.limit else test,
                                      packaged_model_dir())
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))
    json.dump({k: v for k, v in figures.items() if k != "predicted_tiers"}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
