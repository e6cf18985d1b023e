"""Locust load test of a running gateway: mixed traffic, streamed and not.

    .venv/bin/locust -f loadtests/locustfile.py --headless -u 8 -r 4 -t 30s --host http://127.0.0.1:8000 \
        --csv loadtests/results/locust

Tier-1 prompts dominate, as in real traffic; tier-3 prompts need a provider (``tier3.providers``) or
they count as failures with the gateway's 503. Streamed responses are read line by line with
``iter_lines()`` (FastHttpUser would buffer them), and a stream counts as failed unless it ends with
``[DONE]`` after a chunk carrying the ``tierwise`` field.
"""

from __future__ import annotations

import json
import random
import uuid

from locust import HttpUser, between, task

TIER1 = ["Product is great!", "What is our return policy?", "How long does shipping take?",
         "Classify as positive, negative or neutral: 'The delivery was late and the box was crushed.'",
         "Extract the people and places: Angela visited the Berlin office of Siemens last Tuesday."]
TIER3 = ["Compare these two business strategies.", "Write a professional follow-up."]


class ChatUser(HttpUser):
    """One client of the OpenAI-compatible API."""

    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.conversation = f"locust-{uuid.uuid4().hex}"

    def _body(self, prompts: list[str], stream: bool = False) -> dict:
        return {"model": "auto", "stream": stream, "messages": [{"role": "user", "content": random.choice(prompts)}]}

    @task(8)
    def tier1_chat(self) -> None:
        self.client.post("/v1/chat/completions", json=self._body(TIER1), name="chat tier1")

    @task(2)
    def tier1_stream(self) -> None:
        self._stream(self._body(TIER1, stream=True), "chat tier1 stream")

    @task(1)
    def conversation_turn(self) -> None:
        self.client.post("/v1/chat/completions", json=self._body(TIER1), name="chat conversation",
                         headers={"X-Conversation-Id": self.conversation})

    @task(1)
    def tier3_stream(self) -> None:
        self._stream(self._body(TIER3, stream=True), "chat tier3 stream")

    @task(1)
    def route_only(self) -> None:
        self.client.post("/v1/route", json=self._body(TIER1 + TIER3), name="route")

    def _stream(self, body: dict, name: str) -> None:
        with self.client.post("/v1/chat/completions", json=body, name=name, stream=True,
                              catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return
            saw_tierwise = done = False
            for line in response.iter_lines():
                if not line.startswith(b"data: "):
                    continue
                payload = line[len(b"data: "):]
                if payload == b"[DONE]":
                    done = True
                    break
                event = json.loads(payload)
                if "error" in event:
                    response.failure(event["error"]["message"][:200])
                    return
                saw_tierwise = saw_tierwise or "tierwise" in event
            if not (done and saw_tierwise):
                response.failure("stream ended without [DONE] after a tierwise chunk")
            else:
                response.success()
