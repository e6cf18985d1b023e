"""Latency benchmark: the router on one core, and a tier-1 request over HTTP against the same work done
in-process, in one run.

    .venv/bin/python loadtests/bench_latency.py            # or: make bench

Writes ``loadtests/results/bench_latency.json`` and ``loadtests/results/bench_latency.md`` (the README's
table). Tierwise's budgets (README, "Benchmarks"): router one query p50 <= 3 ms on one core, >= 400
queries/s per core batched; tier-1 request end to end over HTTP p50 <= 6 ms on a 2-core machine; gateway
overhead p50 <= 3 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from models.router import RouteInput, Router  # noqa: E402
from models.tier1 import Tier1Models  # noqa: E402
from serve.settings import load_settings  # noqa: E402

RESULTS = ROOT / "loadtests" / "results"
TIER1_PROMPTS = [
    "Product is great!",
    "Extract the people and places: Angela visited the Berlin office of Siemens last Tuesday.",
    "What is our return policy?",
    "Classify as positive, negative or neutral: 'The delivery was late and the box was crushed.'",
    "How long does shipping take?",
    "Which category is this ticket, billing, technical or shipping? 'I was charged twice.'",
    "Sentiment? I absolutely love this blender.",
    "Do you ship internationally?",
]
MIXED_PROMPTS = TIER1_PROMPTS + [
    "Write a professional follow-up.",
    "Compare these two business strategies.",
    "Summarise the meeting notes below in three bullet points for the leadership team.",
    "Prove that the sum of two odd numbers is even, step by step.",
]


def pct(values: list[float], q: float) -> float:
    """Percentile in milliseconds, rounded for the table."""
    return round(float(np.percentile(values, q)) * 1000, 3)


def summary(values: list[float]) -> dict:
    """p50/p90/p99/mean in ms."""
    return {"n": len(values), "p50_ms": pct(values, 50), "p90_ms": pct(values, 90), "p99_ms": pct(values, 99),
            "mean_ms": round(statistics.fmean(values) * 1000, 3)}


def bench_router(settings, n: int) -> dict:
    """One query at a time on one core, then batches of 32 and 64 on one core."""
    os.sched_setaffinity(0, {0})
    router = Router.from_settings(settings)
    for p in MIXED_PROMPTS * 5:
        router.route_batch([RouteInput(p)])
    single = []
    for i in range(n):
        started = time.perf_counter()
        router.route_batch([RouteInput(MIXED_PROMPTS[i % len(MIXED_PROMPTS)])])
        single.append(time.perf_counter() - started)
    batched = {}
    for size in (32, 64):
        batch = [RouteInput(MIXED_PROMPTS[i % len(MIXED_PROMPTS)]) for i in range(size)]
        router.route_batch(batch)
        rounds, started = 20, time.perf_counter()
        for _ in range(rounds):
            router.route_batch(batch)
        elapsed = time.perf_counter() - started
        batched[str(size)] = {"queries_per_s": round(rounds * size / elapsed, 1),
                              "batch_ms": round(elapsed / rounds * 1000, 3)}
    os.sched_setaffinity(0, set(range(os.cpu_count())))
    return {"single_query_one_core": summary(single), "batched_one_core": batched}


def bench_direct_tier1(settings, n: int) -> dict:
    """The tier-1 work a gateway request triggers (route + answer), in-process, no Ray, no HTTP."""
    router = Router.from_settings(settings)
    tier1 = Tier1Models.from_settings(settings, router.encoder, router.faq)
    times = []
    for i in range(n + 50):
        text = TIER1_PROMPTS[i % len(TIER1_PROMPTS)]
        started = time.perf_counter()
        (d,) = router.route_batch([RouteInput(text)])
        if d.tier == 1:
            tier1.answer_batch([d.tier1_request(text)])
        if i >= 50:
            times.append(time.perf_counter() - started)
    return summary(times)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_http(settings, n: int, concurrency: int, duration_s: float) -> dict:
    """Tier-1 chat completions over HTTP: sequential, then ``concurrency`` clients for ``duration_s``."""
    import httpx
    import ray
    from ray import serve

    from serve.app import build_app

    os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    os.environ.setdefault("RAY_SERVE_HAPROXY_STATS_PORT", str(free_port()))
    os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port()))
    port = free_port()
    settings = settings.model_copy(deep=True)
    settings.store.backend = "memory"
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(settings), name="bench", route_prefix="/")
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    results = {"ha_proxy": os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"}
    try:
        with httpx.Client(timeout=30) as client:
            def call(i: int) -> float:
                body = {"model": "auto", "messages": [{"role": "user", "content": TIER1_PROMPTS[i % len(TIER1_PROMPTS)]}]}
                started = time.perf_counter()
                r = client.post(url, json=body)
                elapsed = time.perf_counter() - started
                if r.status_code != 200 or r.headers.get("x-tierwise-tier") != "1":
                    raise RuntimeError(f"unexpected answer {r.status_code}: {r.text[:200]}")
                return elapsed

            for i in range(100):
                call(i)
            results["sequential"] = summary([call(i) for i in range(n)])

        async def load() -> dict:
            latencies: list[float] = []
            errors: list[str] = []
            deadline = time.perf_counter() + duration_s

            async def worker(k: int) -> None:
                async with httpx.AsyncClient(timeout=30) as c:
                    i = k
                    while time.perf_counter() < deadline:
                        body = {"model": "auto", "messages": [{"role": "user", "content": TIER1_PROMPTS[i % len(TIER1_PROMPTS)]}]}
                        started = time.perf_counter()
                        r = await c.post(url, json=body)
                        if r.status_code != 200:
                            errors.append(f"{r.status_code}: {r.text[:300]}")
                        latencies.append(time.perf_counter() - started)
                        i += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(concurrency)))
            out = summary(latencies)
            out["requests_per_s"] = round(len(latencies) / (time.perf_counter() - started), 1)
            out["concurrency"] = concurrency
            out["errors"] = len(errors)
            out["first_errors"] = errors[:3]
            return out

        results["concurrent"] = asyncio.run(load())
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


def write_markdown(data: dict, path: Path) -> None:
    r, h, d = data["router"], data["http_tier1"], data["direct_tier1"]
    s = r["single_query_one_core"]
    lines = [
        f"Measured {data['measured_at']} on {data['machine']} by `loadtests/bench_latency.py`.",
        "",
        "| measurement | p50 ms | p99 ms | other |",
        "|---|---|---|---|",
        f"| router decision, one query, one core (int8 ONNX) | {s['p50_ms']} | {s['p99_ms']} | |",
    ]
    for size, b in r["batched_one_core"].items():
        lines.append(f"| router, {size} queries in one call, one core | {b['batch_ms']} (per call) | | "
                     f"{b['queries_per_s']} queries/s |")
    lines += [
        f"| tier-1 work in-process (route + answer, no Ray, no HTTP) | {d['p50_ms']} | {d['p99_ms']} | |",
        f"| tier-1 chat completion over HTTP, sequential | {h['sequential']['p50_ms']} | {h['sequential']['p99_ms']} | |",
        f"| tier-1 chat completion over HTTP, {h['concurrent']['concurrency']} concurrent clients | "
        f"{h['concurrent']['p50_ms']} | {h['concurrent']['p99_ms']} | {h['concurrent']['requests_per_s']} requests/s |",
        f"| gateway overhead (HTTP sequential minus in-process) | "
        f"{round(h['sequential']['p50_ms'] - d['p50_ms'], 3)} | {round(h['sequential']['p99_ms'] - d['p99_ms'], 3)} | |",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=500, help="sequential requests per measurement")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of concurrent load")
    parser.add_argument("--config", default=None)
    args = parser.parse_args()
    settings = load_settings(args.config)
    data = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "router": bench_router(settings, args.n),
        "direct_tier1": bench_direct_tier1(settings, args.n),
        "http_tier1": bench_http(settings, args.n, args.concurrency, args.duration),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_latency.json").write_text(json.dumps(data, indent=2) + "\n")
    write_markdown(data, RESULTS / "bench_latency.md")
    print((RESULTS / "bench_latency.md").read_text())


if __name__ == "__main__":
    main()
