"""The gateway runs on its runtime dependencies alone: what the production image installs.

The default test blocks the top-level modules of the optional extras (build, dev, tier2-cpu) in a
subprocess; the slow one installs ``pip install .`` into a fresh venv, so that a runtime dependency missing
from ``pyproject.toml`` shows too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "tests" / "support" / "runtime_check.py"
EXTRAS = ("build", "dev", "tier2-cpu")


def _distribution(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def extras_modules() -> set[str]:
    """The top-level modules that only the optional extras install (not the runtime's own)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_distribution(r) for r in project["dependencies"]}
    extra = {_distribution(r) for name in EXTRAS for r in project["optional-dependencies"][name]} - runtime
    modules = set()
    for module, distributions in packages_distributions().items():
        names = {d.lower().replace("_", "-") for d in distributions}
        if names & extra and not names & runtime and module.isidentifier():
            modules.add(module)
    return modules


def _run(python: str, blocked: set[str], cwd: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TIERWISE_CONFIG": str(ROOT / "configs" / "tierwise.yaml"),
           "TIERWISE_STORE__BACKEND": "memory"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([python, str(CHECK), ",".join(sorted(blocked))], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _check_answers(out: dict) -> None:
    assert out["chat_status"] == 200, out["chat"]
    assert out["chat"]["tierwise"]["tier"] == 1 and out["chat"]["tierwise"]["task"] == "sentiment"
    assert out["chat"]["choices"][0]["message"]["content"].strip().lower().startswith("positive")
    assert out["route_status"] == 200 and out["route"]["tier"] == 1, out["route"]
    assert out["cli_exit"] == 0, out["cli"]
    assert out["cli"]["tier"] == 1 and out["cli"]["task"] == "sentiment"
    assert out["serve_app"] == "Application"
    assert out["loaded"] == []


def test_extras_modules_are_found():
    modules = extras_modules()
    assert {"torch", "transformers", "sklearn", "datasketch", "vllm", "pytest", "locust"} <= modules
    assert not modules & {"ray", "onnxruntime", "numpy", "fastapi", "redis", "tokenizers"}


def test_gateway_answers_with_the_extras_unimportable():
    blocked = extras_modules()
    out = _run(sys.executable, blocked, ROOT)
    _check_answers(out)


@pytest.mark.slow
def test_gateway_answers_from_a_fresh_runtime_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", str(ROOT)], capture_output=True, text=True,
                             timeout=1800)
    assert install.returncode == 0, install.stderr[-4000:]
    # From outside the checkout, so that `serve` and `models` are the installed copies.
    out = _run(python, set(), tmp_path)
    _check_answers(out)
