"""The pure helpers of loadtests/bench_router_gpu.py: texts of an exact token count, the results tables,
and the plain stop when CUDA is asked of a CPU-only onnxruntime."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from unittest import mock

import pytest

import models.encoder
from models.encoder import load_tokenizer

SCRIPT = Path(__file__).resolve().parents[2] / "loadtests" / "bench_router_gpu.py"


@pytest.fixture(scope="module")
def bench():
    # The script sets OMP_NUM_THREADS for its own process; keep it out of this one's environment.
    with mock.patch.dict(os.environ):
        spec = importlib.util.spec_from_file_location("bench_router_gpu", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer(settings):
    return load_tokenizer(settings.encoder.model_dir)


@pytest.mark.parametrize("n_tokens", [8, 32, 100])
def test_texts_are_exactly_n_tokens(bench, tokenizer, n_tokens):
    texts = bench.build_texts(tokenizer, 40, n_tokens)
    assert len(texts) == 40 and len(set(texts)) == 40
    assert [len(e.ids) for e in tokenizer.encode_batch(texts)] == [n_tokens] * 40
    assert bench.build_texts(tokenizer, 40, n_tokens) == texts  # deterministic


def test_texts_are_not_truncated_by_the_encoder(bench, tokenizer, settings):
    texts = bench.build_texts(tokenizer, 5, 32)
    truncating = load_tokenizer(settings.encoder.model_dir, settings.encoder.max_tokens)
    assert all(len(e.ids) == 32 for e in truncating.encode_batch(texts))


def test_too_short_a_text_is_refused(bench, tokenizer):
    with pytest.raises(ValueError, match="at least 3 tokens"):
        bench.build_texts(tokenizer, 1, 2)


def _row(size: int, qps: float, p99: float) -> dict:
    return {"batch_size": size, "batches": 20, "queries_per_s": qps, "p50_ms": p99 / 2, "p99_ms": p99,
            "mean_ms": size / qps * 1000}


def _entry(mode: str, machine: str, rows: list[dict], variant: str = "onnxruntime") -> dict:
    return {"mode": mode, "variant": variant, "machine": machine, "device_asked": "cpu", "device": "cpu",
            "gpu": None, "onnxruntime": "1.32.0", "providers": ["CPUExecutionProvider"],
            "measured_at": "2026-12-01 00:00 UTC", "tokens": 32, "warmup": 5, "results": rows}


def _table_rows(md: str, heading: str) -> list[list[str]]:
    """The body rows of the table under the first heading that starts with ``heading``."""
    section = md.split("\n## " + heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_markdown_has_one_row_per_batch_size_and_the_overhead(bench):
    entries = [
        _entry("router", "CPU, 2 cores", [_row(1, 100.0, 12.0), _row(32, 180.0, 200.0)]),
        _entry("encoder", "CPU, 2 cores", [_row(1, 250.0, 5.0), _row(32, 300.0, 110.0)]),
        _entry("router", "NVIDIA H200", [_row(256, 150_000.0, 2.0), _row(512, 120_000.0, 6.0)]),
    ]
    md = bench.markdown({"entries": bench.merge_entries([], entries)})
    router_cpu = _table_rows(md, "router: `Router.route_batch` (the whole batch function), CPU, 2 cores")
    assert [r[0] for r in router_cpu] == ["1", "32"]
    assert router_cpu[0][2:5] == ["100.0", "6.0", "12.0"]
    gpu = _table_rows(md, "router: `Router.route_batch` (the whole batch function), NVIDIA H200")
    assert [(r[0], r[5]) for r in gpu] == [("256", "meets"), ("512", "misses: p99")]
    encoder = _table_rows(md, "encoder: `Encoder.encode` alone, CPU, 2 cores")
    assert [r[0] for r in encoder] == ["1", "32"]
    overhead = _table_rows(md, "The router's cost over the encoder, CPU, 2 cores")
    # Router mean 10 ms against encoder 4 ms for one query: 6 ms of the router's own.
    assert overhead[0][0] == "1" and overhead[0][3] == "6.000" and overhead[0][4] == "60%"
    assert "cost over the encoder, NVIDIA H200" not in md  # no encoder figures there
    assert "100,000 queries/s" in md and "p99 <= 5 ms" in md


def test_results_merge_replaces_the_same_run_only(bench, tmp_path):
    out = tmp_path / "router_gpu.json"
    bench.write_results([_entry("router", "CPU, 2 cores", [_row(1, 100.0, 12.0)]),
                         _entry("encoder", "CPU, 2 cores", [_row(1, 250.0, 5.0)])], out)
    bench.write_results([_entry("router", "CPU, 2 cores", [_row(1, 120.0, 10.0)])], out)
    data = json.loads(out.read_text())
    assert [(e["mode"], e["results"][0]["queries_per_s"]) for e in data["entries"]] == [("router", 120.0),
                                                                                        ("encoder", 250.0)]
    assert data["targets"]["queries_per_s_min"] == 100_000 and data["targets"]["batch_p99_ms_max"] == 5.0
    assert (tmp_path / "router_gpu.md").read_text().count("| 1 |") == 3  # router, encoder, overhead


def test_cuda_on_a_cpu_onnxruntime_stops_and_names_the_gpu_extra(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models.encoder, "cuda_available", lambda: False)
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as stop:
        bench.main(["--device", "cuda", "--mode", "router,encoder", "--out", str(out)])
    assert stop.value.code not in (0, None)
    assert "no CUDAExecutionProvider" in str(stop.value.code) and "`gpu` extra" in str(stop.value.code)
    assert not out.exists()
    # With the fallback allowed it runs on the CPU, saying so.
    assert bench.check_onnx_device("cuda", allow_cpu_fallback=True) is False
    assert "Falling back to the CPU" in capsys.readouterr().err

