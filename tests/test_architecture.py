"""The architecture holds: import-linter's contracts (pyproject.toml) pass, would fail on a serving module
importing training code, cover every runtime module, and no import cycle remains."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("serve", "deployments", "models")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
RUNTIME_CONTRACT = "The runtime imports no training"


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(cwd / "pyproject.toml")], cwd=cwd,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=300)


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_contracts_fail_on_a_serving_module_importing_training(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns(
            "*.npz", "*.safetensors", "*.onnx", "*.png", "artifacts", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    routes = tmp_path / "serve" / "api" / "routes.py"
    routes.write_text(routes.read_text() + "\nfrom models.training.finetune import TrainConfig  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "serve is not allowed to import models.training" in result.stdout
    assert "serve.api.routes -> models.training.finetune" in result.stdout


def test_every_runtime_module_is_under_the_runtime_contract():
    (contract,) = [c for c in _contracts() if c["name"].startswith(RUNTIME_CONTRACT)]
    runtime = {f"models.{p.stem}" for p in (ROOT / "models").glob("*.py") if p.stem != "__init__"}
    runtime |= {f"models.{p.name}" for p in (ROOT / "models").iterdir()
                if (p / "__init__.py").exists() and p.name not in ("training", "evaluation")}
    assert runtime <= set(contract["source_modules"]), sorted(runtime - set(contract["source_modules"]))


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES, "tests")
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert _cycles(edges) == []
