"""Chat requests for the load tests, drawn from the public data sets (``models/training/datasets.py`` finds the folder:
``$TIERWISE_DATASETS``, else ``../shared/datasets``), wrapped the way clients send them.

    .venv/bin/python loadtests/prompts.py             # each pool: the router's proposed tiers, and examples
    .venv/bin/python loadtests/prompts.py --write-faq /tmp/covid-faq.yaml

Three pools, by the tier the traffic is meant for:

* tier 1: sentiment (SST-2 test, the Amazon/IMDB/Yelp review sentences, TweetEval sentiment test), intents
  (Banking77 and CLINC150 test), classification into a label set the request names (Banking77 test with two
  other Banking77 categories), entity extraction (CoNLL-2003 and WNUT-17 test) and FAQ questions (the JHU
  COVID user queries). The FAQ questions are tier-1 traffic only for a gateway that serves their FAQ:
  ``--write-faq`` writes the JHU COVID FAQ in ``tier1.faq_path``'s format (``make bench`` serves it); with
  the shipped shop FAQ they are questions for a generative tier.
* tier 2: open generation (MT-Bench writing, roleplay, extraction, STEM and humanities first turns, each
  with its second turn as a follow-up in the same conversation; Vicuna-bench), which the router gives to
  tier 2 when a tier-2 model is predicted good enough, else tier 3.
* tier 3: hard prompts (Arena-Hard, GSM8K test, MT-Bench math, reasoning and coding).

The instructions around the tier-1 payloads are written here, not taken from the training templates
(``models/training/requests/templates.yaml``), so the load does not replay the phrasings tier 1 learned.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.training import datasets as ds  # noqa: E402

TIERS = (1, 2, 3)

# (system prompt, user message) around a payload; "{text}" is the payload, "{labels}" the label set.
SENTIMENT_REVIEW = [
    ("", 'Is this review positive or negative? "{text}"'),
    ("Classify the sentiment of the customer's review as positive or negative. Reply with the label only.",
     "{text}"),
    ("", "What's the sentiment of this review: {text}"),
]
SENTIMENT_TWEET = [
    ("", "Classify this tweet as positive, negative or neutral: {text}"),
    ("You label tweets by sentiment: positive, negative or neutral.", "{text}"),
]
INTENT = [
    ("", 'What is the intent of this customer message? "{text}"'),
    ("You are the intent classifier of a support chat. Reply with the intent of the customer's message.", "{text}"),
]
CLASSIFY = [
    ("", 'Which category fits this support ticket: {labels}? "{text}"'),
    ("Route each customer message to one of these queues: {labels}. Reply with the queue only.", "{text}"),
]
ENTITIES_NEWS = [
    ("", "Extract the people, organizations and places from this news sentence: {text}"),
    ("List the names of people and companies in the user's text, comma-separated.", "{text}"),
]
ENTITIES_TWEET = [
    ("", "Which people and places does this tweet mention? {text}"),
]
MT_BENCH_OPEN = ("writing", "roleplay", "extraction", "stem", "humanities")
MT_BENCH_HARD = ("math", "reasoning", "coding")


@dataclass(frozen=True)
class ChatRequest:
    """One request of the workload: its pool, the tier it is meant for, its messages, and, for an MT-Bench
    question, the second turn a client sends next in the same conversation."""

    pool: str
    tier: int
    messages: list[dict]
    followup: str | None = None

    def body(self, stream: bool = False) -> dict:
        """The chat completion body; a stream asks for its usage chunk as SDK clients do."""
        body = {"model": "auto", "messages": self.messages}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body


def _wrap(pool: str, wrappers: list[tuple[str, str]], text: str, rng: random.Random, **slots) -> ChatRequest:
    system, user = rng.choice(wrappers)
    messages = [{"role": "user", "content": user.format(text=text, **slots)}]
    if system:
        messages.insert(0, {"role": "system", "content": system.format(**slots)})
    return ChatRequest(pool, 1, messages)


def _humanise(label: str) -> str:
    return label.replace("_", " ")


def _tier1(rng: random.Random, n: int) -> list[ChatRequest]:
    """``n`` tier-1 requests per task, each task's rows drawn evenly from its data sets' test splits."""
    reviews = [t for t, _ in ds.sst2("test")] + [t for t, _ in ds.labelled_review_sentences()]
    tweets = [t for t, _ in ds.tweeteval("sentiment", "test") if t]
    banking = ds.banking77("test")
    categories = sorted({c for _, c in banking})
    clinc = [t for t, i in ds.clinc150("test") if i != "oos"]
    news = [ds.detokenize(s.tokens) for s in ds.conll2003("test") if len(s.tokens) >= 6]
    wnut = [ds.detokenize(s.tokens) for s in ds.wnut17("test") if len(s.tokens) >= 6]
    faq = [q for q, _ in ds.covid_jhu_queries()]

    out = []
    for text in rng.sample(reviews, n // 2):
        out.append(_wrap("sentiment", SENTIMENT_REVIEW, ds.user_text(text), rng))
    for text in rng.sample(tweets, n - n // 2):
        out.append(_wrap("sentiment", SENTIMENT_TWEET, text, rng))
    for text, _ in rng.sample(banking, n // 2):
        out.append(_wrap("intent", INTENT, text, rng))
    for text in rng.sample(clinc, n - n // 2):
        out.append(_wrap("intent", INTENT, ds.capitalise(text), rng))
    for text, category in rng.sample(banking, n):
        labels = rng.sample([c for c in categories if c != category], 2) + [category]
        rng.shuffle(labels)
        named = ", ".join(map(_humanise, labels[:-1])) + " or " + _humanise(labels[-1])
        out.append(_wrap("classify", CLASSIFY, text, rng, labels=named))
    for text in rng.sample(news, n // 2):
        out.append(_wrap("entities", ENTITIES_NEWS, text, rng))
    for text in rng.sample(wnut, n - n // 2):
        out.append(_wrap("entities", ENTITIES_TWEET, text, rng))
    # FAQ questions arrive bare, as people type them into a support chat.
    out += [ChatRequest("faq", 1, [{"role": "user", "content": q}]) for q in rng.sample(faq, n)]
    return out


def _mt_bench() -> list[dict]:
    return [json.loads(line) for line in (ds.datasets_dir() / "mt_bench" / "question.jsonl").read_text().split("\n")
            if line.strip()]


def _generative(rng: random.Random, n: int) -> tuple[list[ChatRequest], list[ChatRequest]]:
    """``n`` tier-2 and ``n`` tier-3 requests (or all the data has, where it has fewer)."""
    mt_bench = _mt_bench()
    open_ended = [ChatRequest("generation", 2, [{"role": "user", "content": q["turns"][0]}], followup=q["turns"][1])
                  for q in mt_bench if q["category"] in MT_BENCH_OPEN]
    open_ended += [ChatRequest("generation", 2, [{"role": "user", "content": p}])
                   for p, category in ds.vicuna_bench() if category not in ("coding", "math")]
    hard = [ChatRequest("reasoning", 3, [{"role": "user", "content": p}]) for p, _ in ds.arena_hard()]
    hard += [ChatRequest("reasoning", 3, [{"role": "user", "content": q}]) for q in ds.gsm8k_test()]
    hard += [ChatRequest("reasoning", 3, [{"role": "user", "content": q["turns"][0]}], followup=q["turns"][1])
             for q in mt_bench if q["category"] in MT_BENCH_HARD]
    return rng.sample(open_ended, min(n, len(open_ended))), rng.sample(hard, min(n, len(hard)))


@lru_cache(maxsize=4)
def load_pools(seed: int = 0, per_task: int = 100) -> dict[int, list[ChatRequest]]:
    """The workload's requests by intended tier: ``per_task`` of each tier-1 task, and as many (up to the
    data's size) for tiers 2 and 3; the same seed gives the same requests."""
    rng = random.Random(seed)
    tier1 = _tier1(rng, per_task)
    tier2, tier3 = _generative(rng, per_task)
    return {1: tier1, 2: tier2, 3: tier3}


def shares(tier1: float, tier3: float) -> dict[int, float]:
    """Each tier's share of requests: tier 2 gets what tiers 1 and 3 leave."""
    if not (0 <= tier1 <= 1 and 0 <= tier3 <= 1 and tier1 + tier3 <= 1):
        raise ValueError(f"tier shares must lie in [0, 1] and sum to at most 1 (tier 1 {tier1}, tier 3 {tier3})")
    return {1: tier1, 2: round(1 - tier1 - tier3, 6), 3: tier3}


def pick(pools: dict[int, list[ChatRequest]], weights: dict[int, float], rng: random.Random) -> ChatRequest:
    """A request of a tier drawn by ``weights``."""
    tier = rng.choices(TIERS, weights=[weights[t] for t in TIERS])[0]
    return rng.choice(pools[tier])


def write_faq(path: Path) -> int:
    """The JHU COVID FAQ (its ``faq`` rows: canonical question and answer) as a ``tier1.faq_path`` file; the
    user queries that the workload sends are not in it. Returns the number of entries."""
    rows = json.loads((ds.datasets_dir() / "covid_faq_jhu" / "query_answer_pairs.json").read_text())
    entries = [{"id": f"jhu-{r['id']}", "question": r["question"].strip(), "answer": r["answer"].strip()}
               for r in rows if r["query_type"] == "faq"]
    path.write_text("# The JHU COVID FAQ (ML-Recipes/BERT-FAQ, data/CovidFAQ), written by loadtests/prompts.py.\n"
                    + yaml.safe_dump({"entries": entries}, sort_keys=False, allow_unicode=True, width=120))
    return len(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write-faq", type=Path, help="write the JHU COVID FAQ here and stop")
    parser.add_argument("--per-task", type=int, default=40, help="requests per tier-1 task to route")
    args = parser.parse_args()
    if args.write_faq:
        print(f"{write_faq(args.write_faq)} entries written to {args.write_faq}")
        return

    import os
    import tempfile
    from collections import Counter

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from models.router import RouteInput, Router
    from serve.settings import load_settings

    settings = load_settings()
    settings.tier1.faq_path = Path(tempfile.mkdtemp()) / "covid-faq.yaml"
    write_faq(settings.tier1.faq_path)
    router = Router.from_settings(settings)
    pools = load_pools(per_task=args.per_task)
    for tier, requests in pools.items():
        routed: dict[str, Counter] = {}
        for r in requests:
            system = next((m["content"] for m in r.messages if m["role"] == "system"), "")
            (d,) = router.route_batch([RouteInput(r.messages[-1]["content"], system=system)])
            routed.setdefault(r.pool, Counter())[d.tier] += 1
        for pool, counts in routed.items():
            # The router's proposal: tier 1 may still pass an unsure answer up when a higher tier can answer.
            print(f"meant for tier {tier}, {pool}: router proposes {dict(sorted(counts.items()))}")
    for tier, requests in pools.items():
        examples = requests[:: max(1, len(requests) // 5)]
        print(f"\ntier {tier}, e.g.:", *(json.dumps(r.messages)[:200] for r in examples), sep="\n  ")


if __name__ == "__main__":
    main()
