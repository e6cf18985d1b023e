"""``tierwise replay``: a workload through the running gateway, graded, with the cost read from its ledger.

Quality retained is Tierwise's graded quality over all-frontier's on the same rows (the reference model's
recorded scores); cost cut is 1 - cost / baseline, the baseline being the same requests priced on the
reference model, both from the gateway's usage ledger for the run's own tenant. The run fails when the
ledger's totals differ from the sum of the responses' own ``cost_usd`` and ``baseline_cost_usd``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np

from models.evaluation.replay.recordings import Recordings, load_recordings
from models.evaluation.replay.run import REFERENCE, Outcome, send
from models.evaluation.replay.workload import Leaks, Mix, build_workload, trained_texts

# The ledger keeps each amount to the micro-dollar: totals may differ from the responses' sum by rounding.
LEDGER_TOLERANCE_USD = 1e-6


class LedgerMismatch(RuntimeError):
    """The ledger's totals are not the sum of what the responses said they cost."""


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def _group(outcomes: list[Outcome]) -> dict:
    answered = [o for o in outcomes if o.status == 200]
    tiers = Counter(o.tier for o in answered)
    quality, frontier = sum(o.score() for o in outcomes), sum(o.frontier_score() for o in outcomes)
    cost = sum(o.info.get("cost_usd") or 0 for o in answered)
    baseline = sum(o.info.get("baseline_cost_usd") or 0 for o in answered)
    latency = defaultdict(list)
    for o in answered:
        latency[o.tier].append(o.latency_s)
    return {
        "requests": len(outcomes),
        "tier_share": {t: round(tiers[t] / len(outcomes), 4) for t in (1, 2, 3)},
        "quality": round(quality / len(outcomes), 4),
        "frontier_quality": round(frontier / len(outcomes), 4),
        "quality_retained": round(quality / frontier, 4) if frontier else None,
        "cost_usd": round(cost, 6), "baseline_cost_usd": round(baseline, 6),
        "cost_cut": round(1 - cost / baseline, 4) if baseline else None,
        "latency_ms": {t: {"p50": _ms(v, 50), "p99": _ms(v, 99)} for t, v in sorted(latency.items())},
    }


def figures(outcomes: list[Outcome], usage: dict) -> dict:
    """Overall and per slice, the escalations, tier 1's wrong answers and the ledger's check."""
    overall = _group(outcomes)
    ledger_cost, ledger_baseline = usage["total"]["cost_usd"], usage["total"]["baseline_cost_usd"]
    overall["cost_cut"] = round(1 - ledger_cost / ledger_baseline, 4) if ledger_baseline else None
    overall["errors_5xx"] = sum(500 <= o.status < 600 for o in outcomes)
    overall["errors"] = sum(o.status != 200 for o in outcomes)
    tier1 = [o for o in outcomes if o.tier == 1]
    escalations = Counter(f"{o.info['escalated_from']} -> {o.tier}" for o in outcomes
                          if o.status == 200 and o.info.get("escalated_from"))
    return {
        "overall": overall,
        "slices": {name: _group([o for o in outcomes if o.row.slice == name])
                   for name in sorted({o.row.slice for o in outcomes})},
        "tier1": {"answers": len(tier1),
                  "wrong_answer_rate": round(sum(o.score() == 0 for o in tier1) / len(tier1), 4) if tier1 else None},
        "escalations": dict(sorted(escalations.items())),
        "ledger": {"cost_usd": ledger_cost, "baseline_cost_usd": ledger_baseline,
                   "requests": usage["total"]["requests"],
                   "matches_responses": abs(ledger_cost - overall["cost_usd"]) <= LEDGER_TOLERANCE_USD * len(outcomes)
                   and abs(ledger_baseline - overall["baseline_cost_usd"]) <= LEDGER_TOLERANCE_USD * len(outcomes)},
    }


def _pct(value) -> str:
    return "—" if value is None else f"{value:.1%}"


def render(f: dict, meta: dict) -> str:
    """The report as markdown."""
    lines = [f"# Replay: {meta['mix']}", "",
             f"Measured {meta['measured_at']} by `{meta['command']}` against {meta['url']}: {meta['requests']} "
             f"requests ({meta['held_out']} held-out recorded prompts; none the router, the quality heads or tier 1 "
             f"learned from), {meta['rate']} a second, {meta['stream_share']:.0%} streamed.", "",
             "| slice | requests | tier 1 / 2 / 3 | quality retained | cost cut | p50 ms (tier 2 / 3) |",
             "|---|---|---|---|---|---|"]
    for name, g in [("overall", f["overall"]), *f["slices"].items()]:
        share = " / ".join(_pct(g["tier_share"][t]) for t in (1, 2, 3))
        p50 = " / ".join(str((g["latency_ms"].get(t) or {}).get("p50", "—")) for t in (2, 3))
        lines.append(f"| {name} | {g['requests']} | {share} | {_pct(g['quality_retained'])} | {_pct(g['cost_cut'])} "
                     f"| {p50} |")
    o = f["overall"]
    lines += ["", f"Errors: {o['errors']} ({o['errors_5xx']} 5xx). Escalations: "
              f"{', '.join(f'{k}: {v}' for k, v in f['escalations'].items()) or 'none'}. Tier-1 answers: "
              f"{f['tier1']['answers']} (wrong: {_pct(f['tier1']['wrong_answer_rate'])}).",
              "", f"Ledger: ${f['ledger']['cost_usd']:.6f} against ${f['ledger']['baseline_cost_usd']:.6f} on the "
              f"reference model; equal to the responses' own sums: {f['ledger']['matches_responses']}.",
              "", "Quality is graded by the recording of the model that answered (its recorded score when the answer "
              "is its recording); all-frontier's is the reference model's (GPT-4-1106) recorded score on the same "
              "rows."]
    return "\n".join(lines) + "\n"


def read_usage(url: str, key: str) -> dict:
    """The run tenant's usage report from the gateway's ledger (``GET /v1/usage``)."""
    response = httpx.get(f"{url.rstrip('/')}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    response.raise_for_status()
    return response.json()


def run_report(settings, mix_path: Path, out: Path, url: str, requests: int, rate: float, stream_share: float,
               seed: int = 0, progress=None) -> dict:
    """Build the workload, check it for leaks, send it under a new tenant key, grade it, read the ledger and
    write ``report.md`` and ``figures.json`` to ``out``; raises :class:`LedgerMismatch` when the ledger
    disagrees with the responses."""
    from serve.tenancy.auth import KeyAdmin

    mix = Mix.load(mix_path)
    leaks = Leaks(trained_texts())
    # Only rows the reference model was recorded on can say what all-frontier would have scored.
    held_out = Recordings(r for r in leaks.held_out(load_recordings()) if REFERENCE in r.answers)
    rows = build_workload(mix, held_out, requests, seed)
    leaked = [r.id for r in rows if r.prompt in leaks]
    if leaked:
        raise ValueError(f"rows the models learned from: {', '.join(leaked[:20])}")
    tenant = f"replay-{uuid.uuid4().hex[:12]}"
    _, key = KeyAdmin(settings.store.url, settings.store.prefix).create(tenant)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    outcomes = asyncio.run(send(rows, url, key, rate, stream_share, seed=seed, progress=progress))
    result = figures(outcomes, read_usage(url, key))
    meta = {"mix": str(mix_path), "measured_at": started, "url": url, "requests": len(rows), "rate": rate,
            "stream_share": stream_share, "held_out": len(held_out), "tenant": tenant,
            "command": f"tierwise replay --mix {mix_path} --out {out} --limit {requests} --rate {rate}"}
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures.json").write_text(json.dumps(result | {"run": meta}, indent=2) + "\n")
    (out / "report.md").write_text(render(result, meta))
    if not result["ledger"]["matches_responses"]:
        raise LedgerMismatch(f"the ledger's totals (${result['ledger']['cost_usd']}, baseline "
                             f"${result['ledger']['baseline_cost_usd']}) differ from the responses' "
                             f"(${result['overall']['cost_usd']}, ${result['overall']['baseline_cost_usd']})")
    return result
