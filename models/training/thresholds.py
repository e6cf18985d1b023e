"""``tierwise calibrate``: fit ``router.quality.threshold`` to a target on a labelled set of requests.

The threshold is on a calibrated probability (that a tier-2 model answers well enough); tier 1's
share is set by what the requests ask for and is not moved by it. Two targets:

- a share of all traffic on tier 3: the threshold sends exactly that share of the fitting half's requests
  to tier 3 (those generative requests with the lowest predicted quality);
- a budget in USD per 1,000 requests: the highest threshold (so the best quality) whose cost on the
  fitting half stays within the budget, with each request priced on the tier it goes to.

The requests are split in two by a seeded hash of their text: the threshold is fitted on one half and the
tier mix and cost it gives are reported on the other, so the report shows how well it carries over.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.router import RouteInput

HELD_OUT_SHARE = 0.5
# A tier-2 or tier-3 answer's length when the requests do not say: the median completion of chat traffic
# is a few hundred tokens.
DEFAULT_OUTPUT_TOKENS = 300


@dataclass(frozen=True)
class RoutedRequest:
    """What calibration needs of one routed request: whether tier 1 answers it, the best tier-2 model's
    predicted quality, and its token counts."""

    tier1: bool
    quality: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class TierPrices:
    """USD per request on each tier, from the price table's per-token prices."""

    tier1: tuple[float, float]
    tier2: tuple[float, float]
    tier3: tuple[float, float]

    def cost(self, tier: int, r: RoutedRequest) -> float:
        """USD for ``r`` answered on ``tier``."""
        price_in, price_out = (self.tier1, self.tier2, self.tier3)[tier - 1]
        return (r.input_tokens * price_in + (0 if tier == 1 else r.output_tokens) * price_out) / 1e6


def tiers(requests: list[RoutedRequest], threshold: float) -> np.ndarray:
    """The tier each request goes to under ``threshold``."""
    return np.array([1 if r.tier1 else 2 if r.quality >= threshold else 3 for r in requests])


def mix(requests: list[RoutedRequest], threshold: float) -> dict[int, float]:
    """Share of requests per tier under ``threshold``."""
    t = tiers(requests, threshold)
    return {tier: round(float((t == tier).mean()), 4) for tier in (1, 2, 3)}


def cost_per_1k(requests: list[RoutedRequest], threshold: float, prices: TierPrices) -> float:
    """USD per 1,000 requests under ``threshold``."""
    return 1000 * float(np.mean([prices.cost(int(t), r) for t, r in zip(tiers(requests, threshold), requests)]))


def _between(values: np.ndarray, k: int) -> float:
    """A threshold with exactly the ``k`` lowest of the sorted ``values`` below it (where ties allow)."""
    if k <= 0:
        return 0.0
    if k >= len(values):
        return 1.0
    return float((values[k - 1] + values[k]) / 2)


def threshold_for_tier3_share(requests: list[RoutedRequest], share: float) -> float:
    """The threshold that sends ``share`` of all requests to tier 3 (as close as tier 1's share allows)."""
    generative = np.sort([r.quality for r in requests if not r.tier1])
    return _between(generative, round(share * len(requests)))


def threshold_for_budget(requests: list[RoutedRequest], budget: float, prices: TierPrices) -> float:
    """The highest threshold whose cost per 1,000 requests is within ``budget`` (0 when even all-tier-2
    traffic costs more: the budget cannot be met)."""
    generative = np.sort([r.quality for r in requests if not r.tier1])
    candidates = [_between(generative, k) for k in range(len(generative) + 1)]
    # Cost rises with the threshold (more requests go to tier 3): bisect on the candidates.
    lo, hi = 0, len(candidates) - 1
    if cost_per_1k(requests, candidates[lo], prices) > budget:
        return 0.0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost_per_1k(requests, candidates[mid], prices) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return candidates[lo]


def held_out(text: str, seed: int = 0) -> bool:
    """Whether a request is in the evaluation half (a seeded hash of its text, the same on every machine)."""
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HELD_OUT_SHARE


def route_requests(router, inputs: list[RouteInput], output_tokens: list[int]) -> list[RoutedRequest]:
    """Run the router on each input (one at a time, as it serves) and keep what calibration needs."""
    routed = []
    for item, out in zip(inputs, output_tokens):
        (d,) = router.route_batch([item])
        tokens = router.encoder.tokenizer.encode(f"{item.system}\n{item.text}\n{item.context}").ids
        routed.append(RoutedRequest(d.tier == 1, max(d.quality.values(), default=1.0), len(tokens), out))
    return routed


def read_requests(path: Path) -> tuple[list[RouteInput], list[int]]:
    """Requests from a JSONL file: ``{"messages": [...]}`` (OpenAI chat format) or ``{"text": ...}``, each
    with an optional ``output_tokens``. Errors name the line."""
    from pydantic import ValidationError

    from serve.api.protocol import ChatCompletionRequest, request_view

    inputs, outputs = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if "messages" in row:
                view = request_view(ChatCompletionRequest.model_validate({"model": "auto", "messages": row["messages"]}), [])
                inputs.append(RouteInput(view.user, view.context, view.system))
            else:
                inputs.append(RouteInput(str(row["text"])))
            outputs.append(int(row.get("output_tokens", DEFAULT_OUTPUT_TOKENS)))
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise ValueError(f"{path}:{number}: not a request ({exc}); write {{\"messages\": [...]}} or "
                             f"{{\"text\": \"...\"}}") from None
    if not inputs:
        raise ValueError(f"{path}: no requests")
    return inputs, outputs


def calibrate(routed: list[RoutedRequest], texts: list[str], *, tier3_share: float | None = None,
              budget_per_1k: float | None = None, prices: TierPrices | None = None, seed: int = 0) -> dict:
    """Fit the threshold on one half of ``routed`` and report the mix and cost on the other."""
    if (tier3_share is None) == (budget_per_1k is None):
        raise ValueError("give exactly one target: a tier-3 share or a budget per 1,000 requests")
    if budget_per_1k is not None and prices is None:
        raise ValueError("a budget target needs the tier prices")
    evaluate = [held_out(t, seed) for t in texts]
    fit = [r for r, e in zip(routed, evaluate) if not e]
    check = [r for r, e in zip(routed, evaluate) if e]
    if tier3_share is not None:
        threshold = threshold_for_tier3_share(fit, tier3_share)
        target = {"tier3_share": tier3_share}
    else:
        threshold = threshold_for_budget(fit, budget_per_1k, prices)
        target = {"budget_per_1k_usd": budget_per_1k}
    report = {"threshold": round(threshold, 4), "target": target,
              "requests": {"fit": len(fit), "held_out": len(check)},
              "fit": {"mix": mix(fit, threshold)}, "held_out": {"mix": mix(check, threshold)}}
    if prices is not None:
        report["fit"]["cost_per_1k_usd"] = round(cost_per_1k(fit, threshold, prices), 4)
        report["held_out"]["cost_per_1k_usd"] = round(cost_per_1k(check, threshold, prices), 4)
    if tier3_share is not None:
        report["held_out"]["tier3_share_error_pp"] = round(100 * (report["held_out"]["mix"][3] - tier3_share), 2)
    return report


def write_threshold(config_path: Path, threshold: float, fitted: str) -> None:
    """Set ``router.quality.threshold`` and ``router.quality.fitted`` in the config file, keeping its
    comments and layout."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    # The layout configs/ is written in: block sequences indented under their key.
    yaml.indent(mapping=2, sequence=4, offset=2)
    data = yaml.load(config_path.read_text()) or {}
    router = data.setdefault("router", {})
    quality = router.setdefault("quality", {})
    quality["threshold"] = round(float(threshold), 4)
    quality["fitted"] = fitted
    with open(config_path, "w") as f:
        yaml.dump(data, f)
