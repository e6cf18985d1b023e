"""Locust load test of a running gateway: a mixed workload drawn from the public data sets, streamed and not.

    .venv/bin/locust -f loadtests/locustfile.py --headless -u 8 -r 4 -t 30s --host http://127.0.0.1:8000 \
        --tier1-share 0.8 --tier3-share 0.1 --stream-share 0.25 --csv loadtests/results/locust

The requests come from ``loadtests/prompts.py``: tier-1 tasks (sentiment, intents, classification into named
labels, entity extraction, FAQ questions) around test-split texts, open generation for tier 2 (MT-Bench,
Vicuna-bench) and hard prompts for tier 3 (Arena-Hard, GSM8K, MT-Bench math, reasoning and coding). A
request's tier is drawn by ``--tier1-share`` and ``--tier3-share`` (tier 2 gets the rest), and it is streamed
with probability ``--stream-share`` (each also as ``LOCUST_TIER1_SHARE`` and so on). An MT-Bench question
is a conversation: its second turn follows in the same ``X-Conversation-Id``. Prompts meant for tier 2 or 3
need a tier-3 provider on a gateway without tier 2 (``loadtests/fake_provider.py`` stands in for one), or
they fail with the gateway's 503. The FAQ questions (JHU COVID user queries) stay on tier 1 only on a gateway
that serves their FAQ (``loadtests/prompts.py --write-faq``); elsewhere they go up like any question.

Locust's table has three kinds of rows. ``POST`` rows are named by what was sent ("chat tier1", "chat tier3
stream", "chat tier2 followup"); a stream's time is the whole stream, to ``[DONE]``. ``TIER`` rows
("answered tier1", ...) repeat each successful request under the tier that answered it (``tierwise.tier``),
with the same time. ``TTFT`` rows ("ttft tier3", ...) hold each stream's time to its first content delta
(not its headers, nor the empty role chunk), by answering tier. The "Aggregated" row therefore counts a
request more than once, in its requests and its rate: read the rows by name. A request fails unless its
status is 200 and its body (a stream's last chunk) carries ``tierwise``, and a stream also fails unless it
ends with ``[DONE]``.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid

from locust import HttpUser, between, events, task  # first: locust's gevent patching must precede requests
import requests

from prompts import ChatRequest, load_pools, pick, shares

URL = "/v1/chat/completions"
# The run's spend and what the all-frontier baseline would have cost, summed over successful answers.
COST = {"cost_usd": 0.0, "baseline_cost_usd": 0.0}


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    parser.add_argument("--tier1-share", type=float, default=0.8, env_var="LOCUST_TIER1_SHARE",
                        help="share of requests meant for tier 1")
    parser.add_argument("--tier3-share", type=float, default=0.1, env_var="LOCUST_TIER3_SHARE",
                        help="share of requests meant for tier 3 (tier 2 gets the rest)")
    parser.add_argument("--stream-share", type=float, default=0.25, env_var="LOCUST_STREAM_SHARE",
                        help="share of requests streamed")
    parser.add_argument("--prompt-seed", type=int, default=0, env_var="LOCUST_PROMPT_SEED",
                        help="seed of the requests drawn from the data sets")


@events.init.add_listener
def _load_prompts(environment, **_) -> None:
    # Before the first user starts: bad shares stop the run here, and reading the data sets inside a user
    # would stall the others' requests.
    options = environment.parsed_options
    shares(options.tier1_share, options.tier3_share)
    load_pools(options.prompt_seed)


@events.test_stop.add_listener
def _report_cost(**_) -> None:
    logging.info("cost of the answers: $%.6f; all on the frontier baseline: $%.6f",
                 COST["cost_usd"], COST["baseline_cost_usd"])


class StreamFailed(Exception):
    """A stream that carried an error event or ended without ``[DONE]``."""


def read_stream(response: requests.Response) -> tuple[float | None, dict | None, int]:
    """Read a chat completion stream to ``[DONE]``: the ``perf_counter`` time of its first content delta (None
    if it had none), the ``tierwise`` field of its last chunk (None if no chunk had it) and its bytes."""
    first = info = None
    length = 0
    # chunk_size=None yields each HTTP chunk as it arrives; a fixed size waits for that many bytes, which
    # would hold the first token back.
    for line in response.iter_lines(chunk_size=None):
        length += len(line)
        if not line.startswith(b"data: "):
            continue
        payload = line[len(b"data: "):]
        if payload == b"[DONE]":
            return first, info, length
        event = json.loads(payload)
        if "error" in event:
            raise StreamFailed(f"error event: {event['error'].get('message')}")
        deltas = [c.get("delta") or {} for c in event.get("choices", [])]
        if first is None and any(d.get("content") or d.get("tool_calls") for d in deltas):
            first = time.perf_counter()
        info = event.get("tierwise") or info
    raise StreamFailed("the stream did not end with [DONE]")


class ChatUser(HttpUser):
    """One client of the OpenAI-compatible API."""

    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.weights = shares(options.tier1_share, options.tier3_share)
        self.stream_share = options.stream_share
        self.pools = load_pools(options.prompt_seed)
        self.rng = random.Random()

    @task
    def chat(self) -> None:
        request: ChatRequest = pick(self.pools, self.weights, self.rng)
        name = f"chat tier{request.tier}"
        headers = {"X-Conversation-Id": f"locust-{uuid.uuid4().hex}"} if request.followup else {}
        answered = self._send(request.body(self._stream()), name, headers)
        if answered and request.followup:
            # The history stays on the server: a follow-up sends the new turn only.
            followup = ChatRequest(request.pool, request.tier, [{"role": "user", "content": request.followup}])
            self._send(followup.body(self._stream()), f"{name} followup", headers)

    def _stream(self) -> bool:
        return self.rng.random() < self.stream_share

    def _send(self, body: dict, name: str, headers: dict) -> bool:
        """Send one chat request and check it; True when it was answered."""
        if body.get("stream"):
            return self._streamed(body, f"{name} stream", headers)
        with self.client.post(URL, json=body, name=name, headers=headers, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return False
            try:
                info = response.json()["tierwise"]
            except (ValueError, KeyError, TypeError):
                response.failure("the body lacks the tierwise field")
                return False
            response.success()
        self._answered(info, response.request_meta["response_time"], len(response.content))
        return True

    def _streamed(self, body: dict, name: str, headers: dict) -> bool:
        started = time.perf_counter()
        with self.client.post(URL, json=body, name=name, headers=headers, stream=True,
                              catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return False
            try:
                first, info, length = read_stream(response)
            except (StreamFailed, requests.RequestException, ValueError) as exc:
                response.failure(f"stream failed: {exc}"[:200])
                return False
            finally:
                response.close()
            elapsed_ms = (time.perf_counter() - started) * 1000
            # Locust timed the headers; a stream's time runs to its end.
            response.request_meta["response_time"] = elapsed_ms
            response.request_meta["response_length"] = length
            if info is None:
                response.failure("no chunk of the stream carried the tierwise field")
                return False
            response.success()
        self._answered(info, elapsed_ms, length)
        if first is not None:
            self._fire("TTFT", f"ttft tier{info['tier']}", (first - started) * 1000, 0)
        return True

    def _answered(self, info: dict, response_time: float, length: int) -> None:
        COST["cost_usd"] += info.get("cost_usd") or 0.0
        COST["baseline_cost_usd"] += info.get("baseline_cost_usd") or 0.0
        self._fire("TIER", f"answered tier{info['tier']}", response_time, length)

    def _fire(self, request_type: str, name: str, response_time: float, length: int) -> None:
        self.environment.events.request.fire(request_type=request_type, name=name, response_time=response_time,
                                             response_length=length, exception=None, context={})
