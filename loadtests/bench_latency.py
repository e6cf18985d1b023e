"""Latency, throughput and cost benchmark of the gateway on this machine, in one run: the router on one core;
the tier-1 work in-process against the same requests over HTTP (the gateway's overhead); a mixed workload,
recording the tier that answered each request; and the highest tier-1 request rate the machine sustains
within the budgets.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python loadtests/bench_latency.py     # or: make bench

The requests come from the public data sets (``loadtests/prompts.py``). The gateway runs on a local Ray
instance with the in-process store and two stand-ins, so that every request is answered and none aborts the
run: the JHU COVID FAQ as its FAQ (FAQ questions can stay on tier 1), and as tier 3 a local
OpenAI-compatible server (``loadtests/fake_provider.py``, priced as gpt-4o) that echoes at once, so a
tier-3 latency here is the gateway's work plus the echo's, not a frontier model's. No tier 2 is deployed:
what the router gives tier 2 goes to tier 3, marked ``escalated_from: 2``. A request fails only on a status
other than 200, a body without ``tierwise`` or a stream without ``[DONE]``; where it is answered is
recorded, not checked.

Writes ``loadtests/results/bench_latency.{json,md}`` (the README's tables) and four plots beside them:
``latency_by_tier.png``, ``throughput.png``, ``overhead.png`` and ``cost.png``. Tierwise's budgets (README,
"Benchmarks"): a router decision p50 <= 3 ms on one core and >= 400 queries/s per core batched; a tier-1
request over HTTP p50 <= 6 ms on a 2-core machine (one request at a time); gateway overhead p50 <= 3 ms
and p99 <= 20 ms. The sustained tier-1 rate is the highest open-loop rate answered in full, with no failure
and a p99 within the in-process p99 plus the 20 ms overhead budget, held for ``--confirm`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np

from harness import RESULTS, ROOT, local_gateway, machine, pct, prepare

prepare()

from models.request import reader_text  # noqa: E402
from models.router import RouteInput, Router  # noqa: E402
from models.tier1 import Tier1Models  # noqa: E402
from prompts import TIERS, ChatRequest, load_pools, pick, shares, write_faq  # noqa: E402
from serve.settings import ProviderSettings, load_settings  # noqa: E402

OVERHEAD_P99_BUDGET_MS = 20.0
# The earlier runs' hand-written tier-1 prompts, timed through the router only to compare this run's machine
# with theirs: the data-set requests are longer, and a shared machine's speed varies from day to day.
REFERENCE_PROMPTS = [
    "Product is great!",
    "Extract the people and places: Angela visited the Berlin office of Siemens last Tuesday.",
    "What is our return policy?",
    "Classify as positive, negative or neutral: 'The delivery was late and the box was crushed.'",
    "How long does shipping take?",
    "Which category is this ticket, billing, technical or shipping? 'I was charged twice.'",
    "Sentiment? I absolutely love this blender.",
    "Do you ship internationally?",
]
WARMUP = 50


def summary(values: list[float]) -> dict:
    """p50/p90/p95/p99/mean in ms of a list of seconds."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": pct(values, 50), "p90_ms": pct(values, 90), "p95_ms": pct(values, 95),
            "p99_ms": pct(values, 99), "mean_ms": round(statistics.fmean(values) * 1000, 3)}


def route_input(request: ChatRequest) -> RouteInput:
    """What the router reads of a single-turn request: the user message and the system prompt."""
    system = next((m["content"] for m in request.messages if m["role"] == "system"), "")
    return RouteInput(request.messages[-1]["content"], system=system)


def bench_router(router: Router, tier1: list[ChatRequest], mixed: list[ChatRequest], n: int) -> dict:
    """One query at a time on one core (tier-1 requests, the mixed workload, the earlier runs' prompts), then
    batches of 32 and 64 tier-1 requests on one core."""
    os.sched_setaffinity(0, {0})
    try:
        out = {}
        for name, inputs in (("tier1", [route_input(r) for r in tier1]), ("mixed", [route_input(r) for r in mixed]),
                             ("reference", [RouteInput(p) for p in REFERENCE_PROMPTS])):
            for x in (inputs * WARMUP)[:WARMUP]:
                router.route_batch([x])
            times = []
            for i in range(n):
                started = time.perf_counter()
                router.route_batch([inputs[i % len(inputs)]])
                times.append(time.perf_counter() - started)
            # What the encoder reads of each request: its first max_tokens word pieces.
            pieces = [min(router.encoder.count_tokens(reader_text(x.system, x.text)), router.encoder.max_tokens)
                      for x in inputs]
            out[f"single_query_one_core_{name}"] = summary(times) | {
                "mean_word_pieces": round(statistics.fmean(pieces), 1)}
        batched = {}
        inputs = [route_input(r) for r in tier1]
        for size in (32, 64):
            batch = inputs[:size]
            router.route_batch(batch)
            rounds, started = 20, time.perf_counter()
            for _ in range(rounds):
                router.route_batch(batch)
            elapsed = time.perf_counter() - started
            batched[str(size)] = {"queries_per_s": round(rounds * size / elapsed, 1),
                                  "batch_ms": round(elapsed / rounds * 1000, 3)}
        out["batched_one_core"] = batched
        return out
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count())))


def bench_direct(router: Router, tier1_models: Tier1Models, requests: list[ChatRequest]) -> list[float]:
    """Each request's tier-1 work in-process (route, and answer when routed to tier 1): no Ray, no HTTP.
    Seconds per request, in the order given."""
    inputs = [route_input(r) for r in requests]

    def work(x: RouteInput) -> None:
        (d,) = router.route_batch([x])
        if d.tier == 1:
            tier1_models.answer_batch([d.tier1_request(x.text)])

    for x in inputs[:WARMUP]:
        work(x)
    times = []
    for x in inputs:
        started = time.perf_counter()
        work(x)
        times.append(time.perf_counter() - started)
    return times


@dataclass
class Outcome:
    """One request over HTTP: when it was sent (seconds into its phase), how long it took, and how it ended."""

    pool: str
    meant: int
    stream: bool
    sent: float
    latency: float = 0.0
    status: int = 0
    tier: int | None = None
    ttft: float | None = None
    cost: float = 0.0
    baseline: float = 0.0
    error: str | None = None


async def send(session: aiohttp.ClientSession, url: str, request: ChatRequest, stream: bool, t0: float,
               headers: dict | None = None, scheduled: float | None = None) -> Outcome:
    """Send one chat request and check it. Its time runs from ``scheduled`` (an open loop's planned send
    time, so a late send counts against the gateway's machine) or from now, to the body's or stream's end."""
    started = scheduled or time.perf_counter()
    out = Outcome(request.pool, request.tier, stream, started - t0)
    info = None
    try:
        async with session.post(url, json=request.body(stream), headers=headers) as r:
            out.status = r.status
            if r.status != 200:
                out.error = f"status {r.status}: {(await r.text())[:200]}"
            elif stream:
                done = False
                async for raw in r.content:  # line by line, as the chunks arrive
                    line = raw.strip()
                    if not line.startswith(b"data: "):
                        continue
                    if line == b"data: [DONE]":
                        done = True
                        break
                    event = json.loads(line[len(b"data: "):])
                    if "error" in event:
                        out.error = f"error event: {str(event['error'].get('message'))[:200]}"
                        break
                    deltas = [c.get("delta") or {} for c in event.get("choices", [])]
                    if out.ttft is None and any(d.get("content") or d.get("tool_calls") for d in deltas):
                        out.ttft = time.perf_counter() - started
                    info = event.get("tierwise") or info
                if not done and out.error is None:
                    out.error = "the stream did not end with [DONE]"
            else:
                info = (await r.json()).get("tierwise")
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        out.error = repr(exc)[:200]
    out.latency = time.perf_counter() - started
    if out.error is None:
        if info is None:
            out.error = "no tierwise field"
        else:
            out.tier = info["tier"]
            out.cost, out.baseline = info.get("cost_usd") or 0.0, info.get("baseline_cost_usd") or 0.0
    return out


def session(limit: int = 100) -> aiohttp.ClientSession:
    # aiohttp rather than httpx: on 2 cores the load generator shares the CPU with the gateway, and aiohttp
    # spends about a third of httpx's CPU per request here (0.5 ms against 1.6 ms).
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=60))


async def sequential(url: str, requests: list[ChatRequest]) -> list[Outcome]:
    """Each request once, one at a time, after a warm-up."""
    async with session() as s:
        t0 = time.perf_counter()
        for r in requests[:WARMUP]:
            await send(s, url, r, False, t0)
        return [await send(s, url, r, False, t0) for r in requests]


async def closed_loop(url: str, pools: dict[int, list[ChatRequest]], weights: dict[int, float],
                      stream_share: float, clients: int, duration: float, seed: int) -> tuple[list[Outcome], float]:
    """``clients`` clients, each sending its next request when the last is answered, for ``duration``
    seconds; an MT-Bench question's second turn follows in its conversation. Returns the outcomes and the
    phase's wall time."""
    outcomes: list[Outcome] = []
    async with session() as s:
        t0 = time.perf_counter()

        async def client(k: int) -> None:
            rng = random.Random(seed * 1000 + k)
            while time.perf_counter() - t0 < duration:
                request = pick(pools, weights, rng)
                headers = {"X-Conversation-Id": f"bench-{uuid.uuid4().hex}"} if request.followup else None
                first = await send(s, url, request, rng.random() < stream_share, t0, headers)
                outcomes.append(first)
                if request.followup and first.error is None:
                    # The history stays on the server: a follow-up sends the new turn only.
                    followup = ChatRequest(f"{request.pool} follow-up", request.tier,
                                           [{"role": "user", "content": request.followup}])
                    outcomes.append(await send(s, url, followup, rng.random() < stream_share, t0, headers))

        await asyncio.gather(*(client(k) for k in range(clients)))
        return outcomes, time.perf_counter() - t0


async def open_loop(url: str, requests: list[ChatRequest], rate: float, duration: float) -> list[Outcome]:
    """``rate`` requests a second, evenly spaced, for ``duration`` seconds, whatever the answers' pace."""
    async with session(limit=256) as s:
        t0 = time.perf_counter()
        tasks = []
        for i in range(round(rate * duration)):
            scheduled = t0 + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            request = requests[i % len(requests)]
            tasks.append(asyncio.create_task(send(s, url, request, False, t0, scheduled=scheduled)))
        return list(await asyncio.gather(*tasks))


def judge(outcomes: list[Outcome], rate: float, duration: float, p99_budget_ms: float) -> dict:
    """An open-loop step's figures, and whether it stayed within the budgets."""
    ok = [o for o in outcomes if o.error is None]
    lat = summary([o.latency for o in ok])
    elapsed = max(o.sent + o.latency for o in outcomes)
    step = {"offered_per_s": rate, "duration_s": duration, "requests": len(outcomes),
            "achieved_per_s": round(len(ok) / elapsed, 1), "failures": len(outcomes) - len(ok),
            "not_tier1": sum(o.tier != 1 for o in ok), "p50_ms": lat.get("p50_ms"), "p99_ms": lat.get("p99_ms"),
            "first_errors": [o.error for o in outcomes if o.error][:3]}
    step["passed"] = bool(step["failures"] == 0 and ok and lat["p99_ms"] <= p99_budget_ms
                          and step["achieved_per_s"] >= 0.95 * rate)
    return step


def sustained_rate(url: str, requests: list[ChatRequest], p99_budget_ms: float, start: float, step_s: float,
                   confirm_s: float) -> dict:
    """Raise the open-loop rate by half until a step breaks a budget, bisect between the last step that held
    and the first that broke (to 5%), then hold the best rate for ``confirm_s`` seconds, stepping down 10% at
    a time until one holds."""
    steps, last = [], []

    def holds(rate: float, duration: float) -> bool:
        last[:] = asyncio.run(open_loop(url, requests, rate, duration))
        step = judge(last, rate, duration, p99_budget_ms)
        steps.append(step)
        print(f"  {rate:.0f}/s for {duration:.0f} s: p50 {step['p50_ms']} ms, p99 {step['p99_ms']} ms, "
              f"{step['failures']} failures, {'held' if step['passed'] else 'broke'}", flush=True)
        time.sleep(1)  # let the last answers drain before the next step
        return step["passed"]

    lo, hi, rate = 0, None, round(start)
    while hi is None:
        if holds(rate, step_s):
            lo, rate = rate, round(rate * 1.5)
        else:
            hi = rate
    while hi - lo > max(5, 0.05 * hi):
        mid = round((lo + hi) / 2)
        lo, hi = (mid, hi) if holds(mid, step_s) else (lo, mid)
    while lo > 0 and not holds(lo, confirm_s):
        lo = round(lo * 0.9)
    return {"sustained_per_s": lo, "confirmed": steps[-1] if lo else None, "steps": steps,
            "confirm_per_second": per_second(last, confirm_s, lambda o: "tier1")["tier1"] if lo else []}


def per_second(outcomes: list[Outcome], duration: float, key) -> dict[str, list[int]]:
    """Requests completed in each whole second of a phase, by ``key(outcome)``; the stragglers answered after
    its last whole second are left out."""
    seconds = int(duration)
    series: dict[str, list[int]] = {}
    for o in outcomes:
        done = int(o.sent + o.latency)
        if o.error is None and done < seconds:
            series.setdefault(str(key(o)), [0] * seconds)[done] += 1
    return series


def describe_mixed(outcomes: list[Outcome], wall: float) -> dict:
    """Per answered tier: latency (whole request) and time to first token; where each pool was answered;
    failures; throughput; cost against the all-frontier baseline, cumulative in completion order."""
    ok = [o for o in outcomes if o.error is None]
    by_tier = {}
    for tier in TIERS:
        mine = [o for o in ok if o.tier == tier]
        if mine:
            by_tier[str(tier)] = {"requests": len(mine), "share": round(len(mine) / len(ok), 3),
                                  "latency": summary([o.latency for o in mine if not o.stream]),
                                  "stream_total": summary([o.latency for o in mine if o.stream]),
                                  "ttft": summary([o.ttft for o in mine if o.stream and o.ttft is not None])}
    pools: dict[str, Counter] = defaultdict(Counter)
    for o in outcomes:
        pools[f"{o.pool} (meant for tier {o.meant})"][f"tier {o.tier}" if o.error is None else "failed"] += 1
    done = sorted(ok, key=lambda o: o.sent + o.latency)
    cost, baseline = sum(o.cost for o in ok), sum(o.baseline for o in ok)
    return {"requests": len(outcomes), "failures": len(outcomes) - len(ok),
            "first_errors": [o.error for o in outcomes if o.error][:5],
            "requests_per_s": round(len(ok) / wall, 1), "wall_s": round(wall, 2), "by_answering_tier": by_tier,
            "by_pool": {pool: dict(sorted(where.items())) for pool, where in sorted(pools.items())},
            "cost_usd": round(cost, 6), "baseline_cost_usd": round(baseline, 6),
            "savings_pct": round(100 * (1 - cost / baseline), 1) if baseline else None,
            "per_second_by_tier": per_second(ok, wall, lambda o: o.tier),
            "cumulative": {"t_s": [round(o.sent + o.latency, 3) for o in done],
                           "cost_usd": np.cumsum([o.cost for o in done]).round(8).tolist(),
                           "baseline_cost_usd": np.cumsum([o.baseline for o in done]).round(8).tolist()}}


def start_provider() -> tuple[subprocess.Popen, str]:
    """The fake tier-3 provider in a process of its own; its base URL."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "loadtests" / "fake_provider.py")], stdout=subprocess.PIPE,
                            text=True)
    url = proc.stdout.readline().strip()
    if not url:
        raise RuntimeError(f"loadtests/fake_provider.py did not start (exit status {proc.wait()})")
    return proc, url


def bench_http(settings, tier1: list[ChatRequest], direct: list[float], pools: dict[int, list[ChatRequest]],
               args) -> dict:
    """Every phase over HTTP against one gateway: sequential tier-1 requests, concurrent tier-1 clients, the
    mixed workload, the sustained tier-1 rate."""
    provider, provider_url = start_provider()
    settings = settings.model_copy(deep=True)
    settings.store.backend = "memory"
    settings.tier3.providers = [ProviderSettings(name="fake", base_url=provider_url, model="gpt-4o",
                                                 api_key_env="TIERWISE_BENCH_NO_KEY", allow_no_key=True)]
    try:
        with local_gateway(settings, "bench", num_cpus=os.cpu_count()) as port:
            return _phases(f"http://127.0.0.1:{port}/v1/chat/completions", tier1, direct, pools, args)
    finally:
        provider.terminate()
        provider.wait(timeout=30)


def _phases(url: str, tier1: list[ChatRequest], direct: list[float], pools: dict[int, list[ChatRequest]],
            args) -> dict:
    out = {"ha_proxy": os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1",
           "tier3": "a local fake OpenAI-compatible server (loadtests/fake_provider.py), instant echo answers "
                    "priced as gpt-4o"}

    print("sequential tier-1 requests", flush=True)
    seq = asyncio.run(sequential(url, tier1))
    kept = [i for i, o in enumerate(seq) if o.error is None and o.tier == 1]
    out["sequential"] = summary([seq[i].latency for i in kept]) | {
        "sent": len(seq), "answered_tier1": len(kept), "failures": sum(o.error is not None for o in seq),
        "answered_tier1_by_pool": {p: f"{sum(seq[i].pool == p for i in kept)}/{sum(r.pool == p for r in tier1)}"
                                   for p in dict.fromkeys(r.pool for r in tier1)}}
    out["direct_same_requests"] = summary([direct[i] for i in kept])
    out["overhead_paired"] = summary([seq[i].latency - direct[i] for i in kept])
    out["overhead_samples_ms"] = {"direct": [round(direct[i] * 1000, 3) for i in kept],
                                  "http": [round(seq[i].latency * 1000, 3) for i in kept]}
    tier1_only = {**{t: [] for t in TIERS}, 1: [tier1[i] for i in kept]}

    print(f"{args.concurrency} concurrent tier-1 clients for {args.tier1_duration:.0f} s", flush=True)
    outcomes, wall = asyncio.run(closed_loop(url, tier1_only, {1: 1.0, 2: 0.0, 3: 0.0}, 0.0, args.concurrency,
                                             args.tier1_duration, args.seed))
    ok = [o for o in outcomes if o.error is None]
    out["concurrent_tier1"] = summary([o.latency for o in ok]) | {
        "concurrency": args.concurrency, "requests_per_s": round(len(ok) / wall, 1),
        "errors": len(outcomes) - len(ok), "first_errors": [o.error for o in outcomes if o.error][:3]}

    print(f"mixed workload, {args.concurrency} clients for {args.duration:.0f} s", flush=True)
    weights = shares(args.tier1_share, args.tier3_share)
    outcomes, wall = asyncio.run(closed_loop(url, pools, weights, args.stream_share, args.concurrency,
                                             args.duration, args.seed))
    out["mixed"] = describe_mixed(outcomes, wall) | {
        "clients": args.concurrency, "tier_shares_sent": weights, "stream_share": args.stream_share}

    print("sustained tier-1 rate (open loop)", flush=True)
    p99_budget = out["direct_same_requests"]["p99_ms"] + OVERHEAD_P99_BUDGET_MS
    out["sustained_tier1"] = sustained_rate(url, tier1_only[1], p99_budget, args.start_rate, args.step,
                                            args.confirm) | {"p99_budget_ms": round(p99_budget, 3)}
    return out


def plot(data: dict, folder: Path) -> list[str]:
    """The four figures; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, mixed = data["http"], data["http"]["mixed"]
    names = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        names.append(name)

    # Latency by answering tier: whole requests (streams to their end) and streams' time to first token.
    fig, ax = plt.subplots(figsize=(9, 4.5))
    groups = []
    for tier, t in mixed["by_answering_tier"].items():
        groups += [(f"tier {tier}\nnot streamed", t["latency"]), (f"tier {tier}\nstream, to [DONE]", t["stream_total"]),
                   (f"tier {tier}\nstream, TTFT", t["ttft"])]
    groups = [(label, s) for label, s in groups if s.get("n")]
    x = np.arange(len(groups))
    for k, q in enumerate(("p50", "p95", "p99")):
        ax.bar(x + (k - 1) * 0.27, [s[f"{q}_ms"] for _, s in groups], 0.27, label=q)
    ax.set_xticks(x, [f"{label}\n(n={s['n']})" for label, s in groups], fontsize=8)
    ax.set_ylabel("ms")
    ax.set_title(f"Mixed workload, {mixed['clients']} clients: latency by the tier that answered")
    ax.legend()
    save(fig, "latency_by_tier.png")

    # Throughput: the mixed run by answering tier, the rate search, the confirmed sustained tier-1 rate.
    s = h["sustained_tier1"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    series = mixed["per_second_by_tier"]
    axes[0].stackplot(np.arange(len(next(iter(series.values())))), *series.values(),
                      labels=[f"tier {t}" for t in series])
    axes[0].set(xlabel="second of the run", ylabel="answers/s", title="Mixed workload: answers per second")
    axes[0].legend(loc="upper left", framealpha=0.9)
    search = sorted((st for st in s["steps"] if st["duration_s"] == data["args"]["step"]),
                    key=lambda st: st["offered_per_s"])
    held = [st for st in s["steps"] if st["duration_s"] == data["args"]["confirm"]]
    for q, color in (("p50", "C0"), ("p99", "C1")):
        axes[1].plot([st["offered_per_s"] for st in search], [st[f"{q}_ms"] for st in search], "o-", color=color,
                     label=f"{q}, {data['args']['step']:.0f}-s steps")
        axes[1].plot([st["offered_per_s"] for st in held], [st[f"{q}_ms"] for st in held], "s", color=color,
                     mfc="none", label=f"{q}, {data['args']['confirm']:.0f}-s holds")
    axes[1].axhline(s["p99_budget_ms"], ls="--", color="C1", lw=0.8, label="p99 budget")
    if s["sustained_per_s"]:
        axes[1].axvline(s["sustained_per_s"], color="k", lw=0.8, label=f"sustained {s['sustained_per_s']}/s")
    axes[1].set(xlabel="offered tier-1 requests/s (open loop)", ylabel="ms", ylim=(0, 3 * s["p99_budget_ms"]),
                title="Tier-1 latency against offered rate")
    axes[1].legend(fontsize=8)
    if s["confirm_per_second"]:
        axes[2].plot(s["confirm_per_second"], drawstyle="steps-mid")
        axes[2].axhline(s["sustained_per_s"], ls="--", color="k", lw=0.8)
    axes[2].set(xlabel="second", ylabel="tier-1 answers/s", ylim=(0, None),
                title=f"Sustained tier-1 rate held for {data['args']['confirm']:.0f} s")
    save(fig, "throughput.png")

    # Gateway overhead: the same tier-1 requests in-process and over HTTP, and their per-request difference.
    samples = h["overhead_samples_ms"]
    direct, http = np.array(samples["direct"]), np.array(samples["http"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for values, label in ((direct, "in-process (route + answer)"), (http, "over HTTP through the gateway"),
                          (http - direct, "overhead (HTTP minus in-process, per request)")):
        ax.plot(np.sort(values), np.linspace(0, 1, len(values)), label=label)
    ax.axvline(3, ls="--", color="grey", lw=0.8, label="overhead p50 budget (3 ms)")
    ax.set(xlabel="ms", ylabel="share of requests", title=f"Tier-1 requests sent one at a time (n={len(direct)})",
           xlim=(min(0.0, float(np.min(http - direct))), float(np.percentile(http, 99)) * 1.2))
    ax.legend(fontsize=8)
    save(fig, "overhead.png")

    # Cost against the all-frontier baseline over the mixed run.
    c = mixed["cumulative"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(c["t_s"], c["baseline_cost_usd"], label="all-frontier baseline (baseline_cost_usd)")
    ax.plot(c["t_s"], c["cost_usd"], label="Tierwise (cost_usd)")
    ax.set(xlabel="second of the mixed run", ylabel="cumulative USD",
           title=f"Cost over {mixed['requests']} requests: {mixed['savings_pct']}% saved")
    ax.legend()
    save(fig, "cost.png")
    return names


def write_markdown(data: dict, path: Path) -> None:
    r, h = data["router"], data["http"]
    seq, direct, conc, mixed, s = (h["sequential"], h["direct_same_requests"], h["concurrent_tier1"], h["mixed"],
                                   h["sustained_tier1"])
    t1, mx, ref = (r["single_query_one_core_tier1"], r["single_query_one_core_mixed"],
                   r["single_query_one_core_reference"])
    lines = [
        f"Measured {data['measured_at']} on {data['machine']} by `loadtests/bench_latency.py` "
        f"(`{data['command']}`); load average {data['load_average']} at the start.",
        "",
        f"Requests from the public data sets (`loadtests/prompts.py`, seed {data['args']['seed']}). Tier 3 is "
        f"{h['tier3']}: tier-3 latencies are the gateway's work plus the echo's. No tier 2 is deployed.",
        "",
        "| measurement | p50 ms | p99 ms | other |",
        "|---|---|---|---|",
        f"| router decision, one query, one core (int8 ONNX), tier-1 requests ({t1['mean_word_pieces']} word pieces) "
        f"| {t1['p50_ms']} | {t1['p99_ms']} | |",
        f"| router decision, one query, one core, the mixed workload ({mx['mean_word_pieces']} word pieces) "
        f"| {mx['p50_ms']} | {mx['p99_ms']} | |",
        f"| router decision, one query, one core, the earlier runs' 8 hand-written prompts ({ref['mean_word_pieces']} "
        f"word pieces; compares machines) | {ref['p50_ms']} | {ref['p99_ms']} | |",
    ]
    for size, b in r["batched_one_core"].items():
        lines.append(f"| router, {size} tier-1 queries in one call, one core | {b['batch_ms']} (per call) | | "
                     f"{b['queries_per_s']} queries/s |")
    overhead = h["overhead_paired"]
    lines += [
        f"| tier-1 work in-process (route + answer, no Ray, no HTTP) | {direct['p50_ms']} | {direct['p99_ms']} | "
        f"the {seq['answered_tier1']} requests answered on tier 1 |",
        f"| tier-1 chat completion over HTTP, sequential | {seq['p50_ms']} | {seq['p99_ms']} | "
        f"{seq['answered_tier1']} of {seq['sent']} tier-1 requests answered on tier 1, {seq['failures']} failures |",
        f"| tier-1 chat completion over HTTP, {conc['concurrency']} concurrent clients | {conc['p50_ms']} | "
        f"{conc['p99_ms']} | {conc['requests_per_s']} requests/s, {conc['errors']} errors |",
        f"| gateway overhead (HTTP sequential minus in-process) | {round(seq['p50_ms'] - direct['p50_ms'], 3)} | "
        f"{round(seq['p99_ms'] - direct['p99_ms'], 3)} | per request: p50 {overhead['p50_ms']}, "
        f"p99 {overhead['p99_ms']} |",
    ]
    if s["confirmed"]:
        c = s["confirmed"]
        lines.append(f"| highest sustained tier-1 rate (open loop, {c['duration_s']:.0f} s) | {c['p50_ms']} | "
                     f"{c['p99_ms']} | **{s['sustained_per_s']} requests/s**, {c['failures']} failures |")
    else:
        lines.append("| highest sustained tier-1 rate | | | no rate held within the budgets |")
    lines += [
        "",
        "Tier-1 requests answered on tier 1 when sent one at a time, by task: "
        + ", ".join(f"{p} {v}" for p, v in seq["answered_tier1_by_pool"].items())
        + " (the rest went up: the router sent them higher, or tier 1 was unsure).",
        "",
        f"### Mixed workload: {mixed['clients']} clients for {mixed['wall_s']} s",
        "",
        f"Sent: tier shares {mixed['tier_shares_sent']}, {int(mixed['stream_share'] * 100)}% streamed, MT-Bench "
        f"questions as two-turn conversations. {mixed['requests']} requests, {mixed['failures']} failures, "
        f"{mixed['requests_per_s']} answers/s. Cost ${mixed['cost_usd']} against ${mixed['baseline_cost_usd']} "
        f"all on the frontier baseline ({mixed['savings_pct']}% saved).",
        "",
        "| answered by | requests | share | p50 ms | p95 ms | p99 ms | streams to [DONE] p50 / p99 ms "
        "| TTFT p50 / p95 / p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for tier, t in mixed["by_answering_tier"].items():
        lat, st, tt = t["latency"], t["stream_total"], t["ttft"]
        lines.append(f"| tier {tier} | {t['requests']} | {t['share']} | {lat.get('p50_ms', '')} | "
                     f"{lat.get('p95_ms', '')} | {lat.get('p99_ms', '')} | "
                     f"{st.get('p50_ms', '')} / {st.get('p99_ms', '')} | "
                     f"{tt.get('p50_ms', '')} / {tt.get('p95_ms', '')} / {tt.get('p99_ms', '')} |")
    lines += ["", "| sent | answered |", "|---|---|"]
    lines += [f"| {pool} | {', '.join(f'{k}: {v}' for k, v in sorted(where.items()))} |"
              for pool, where in mixed["by_pool"].items()]
    lines += [
        "",
        f"### Sustained tier-1 rate: {s['sustained_per_s']} requests/s",
        "",
        f"Open loop (evenly spaced sends, each timed from its planned send), tier-1 requests that tier 1 answers. "
        f"A step holds with no failure, p99 <= {s['p99_budget_ms']} ms (the "
        f"in-process p99 plus the 20 ms overhead budget) and at least 95% of the offered rate answered.",
        "",
        "| offered/s | seconds | answered/s | p50 ms | p99 ms | failures | held |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {st['offered_per_s']} | {st['duration_s']:.0f} | {st['achieved_per_s']} | {st['p50_ms']} | "
              f"{st['p99_ms']} | {st['failures']} | {'yes' if st['passed'] else 'no'} |" for st in s["steps"]]
    lines += ["", "Plots: " + ", ".join(f"[`{n}`]({n})" for n in data["plots"]) + "."]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=500, help="router queries per one-query measurement")
    parser.add_argument("--per-task", type=int, default=100, help="requests per tier-1 task (sent one at a time)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients of the closed-loop phases")
    parser.add_argument("--tier1-duration", type=float, default=15.0, help="seconds of concurrent tier-1 clients")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of the mixed workload")
    parser.add_argument("--tier1-share", type=float, default=0.8, help="mixed workload: share meant for tier 1")
    parser.add_argument("--tier3-share", type=float, default=0.1, help="mixed workload: share meant for tier 3")
    parser.add_argument("--stream-share", type=float, default=0.25, help="mixed workload: share streamed")
    parser.add_argument("--start-rate", type=float, default=50, help="first open-loop tier-1 rate, requests/s")
    parser.add_argument("--step", type=float, default=10.0, help="seconds per open-loop step")
    parser.add_argument("--confirm", type=float, default=30.0, help="seconds the sustained rate must hold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default=None)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON, markdown and plots")
    args = parser.parse_args()

    settings = load_settings(args.config)
    faq = Path(tempfile.mkdtemp()) / "covid-faq.yaml"
    write_faq(faq)
    settings.tier1.faq_path = faq
    pools = load_pools(args.seed, args.per_task)
    tier1 = pools[1]
    mix_rng = random.Random(args.seed)
    mixed = [pick(pools, shares(args.tier1_share, args.tier3_share), mix_rng) for _ in range(args.n)]
    data = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "command": " ".join([*(f"{v}={os.environ[v]}" for v in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")
                               if v in os.environ), ".venv/bin/python loadtests/bench_latency.py", *sys.argv[1:]]),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "args": vars(args),
    }
    print("router and in-process tier 1", flush=True)
    router = Router.from_settings(settings)
    data["router"] = bench_router(router, tier1, mixed, args.n)
    direct = bench_direct(router, Tier1Models.from_settings(settings, router.encoder, router.faq), tier1)
    data["http"] = bench_http(settings, tier1, direct, pools, args)
    data["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    args.results.mkdir(parents=True, exist_ok=True)
    data["plots"] = plot(data, args.results)
    (args.results / "bench_latency.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    write_markdown(data, args.results / "bench_latency.md")
    print((args.results / "bench_latency.md").read_text())


if __name__ == "__main__":
    main()
