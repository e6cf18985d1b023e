"""Sending a workload through a running gateway with the official ``openai`` client, and grading what came back.

Requests go out open-loop at a rate (at most ``concurrency`` in flight), some streamed, each with a request id
of its own, under one tenant key made for the run. Each answer is graded by the recording of the model that
gave it: the recorded score when the answer is that model's recording, 0 otherwise (a failed request, a tier-1
answer to a benchmark question, or words no model recorded).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import openai

from models.evaluation.replay.recordings import NoRecording
from models.evaluation.replay.workload import ReplayRow

REFERENCE = "gpt-4-1106-preview"


@dataclass
class Outcome:
    """What the gateway answered to one row."""

    row: ReplayRow
    streamed: bool
    status: int
    latency_s: float
    content: str = ""
    info: dict | None = None
    error: str | None = None

    @property
    def tier(self) -> int | None:
        """The tier that answered (None when the request failed)."""
        return (self.info or {}).get("tier") if self.status == 200 else None

    def score(self) -> float:
        """The answer's graded quality (0 to 1)."""
        if self.status != 200 or self.tier == 1:
            return 0.0
        try:
            recorded, score = self.row.recording.answer(self.info["model"])
        except NoRecording:
            return 0.0
        return score if self.content.strip() == recorded.strip() else 0.0

    def frontier_score(self) -> float:
        """The reference model's recorded quality on the same row: what all-frontier would have scored."""
        return self.row.recording.answer(REFERENCE)[1]


async def _one(client: openai.AsyncOpenAI, row: ReplayRow, stream: bool) -> Outcome:
    messages = [{"role": "user", "content": row.prompt}]
    headers = {"X-Request-Id": f"replay-{uuid.uuid4().hex}"}
    started = time.perf_counter()
    try:
        if stream:
            parts, info = [], None
            async for chunk in await client.chat.completions.create(model="auto", messages=messages, stream=True,
                                                                    extra_headers=headers):
                parts += [c.delta.content or "" for c in chunk.choices]
                info = (chunk.model_extra or {}).get("tierwise") or info
            return Outcome(row, True, 200, time.perf_counter() - started, "".join(parts), info)
        completion = await client.chat.completions.create(model="auto", messages=messages, extra_headers=headers)
        return Outcome(row, False, 200, time.perf_counter() - started, completion.choices[0].message.content or "",
                       (completion.model_extra or {}).get("tierwise"))
    except openai.APIStatusError as exc:
        return Outcome(row, stream, exc.status_code, time.perf_counter() - started, error=str(exc)[:300])
    except openai.APIError as exc:
        return Outcome(row, stream, 0, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}"[:300])


async def send(rows: list[ReplayRow], base_url: str, api_key: str, rate: float, stream_share: float,
               concurrency: int = 32, seed: int = 0, progress: Callable[[], None] | None = None) -> list[Outcome]:
    """Every row through the gateway at ``base_url`` (its ``/v1``), ``rate`` requests a second, a
    ``stream_share`` of them streamed; the outcomes in the rows' order."""
    rng = random.Random(seed)
    streamed = [rng.random() < stream_share for _ in rows]
    gate = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=f"{base_url.rstrip('/')}/v1", api_key=api_key, max_retries=0,
                                  timeout=120) as client:
        start = time.perf_counter()

        async def paced(i: int, row: ReplayRow) -> Outcome:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            async with gate:
                outcome = await _one(client, row, streamed[i])
            if progress:
                progress()
            return outcome

        return list(await asyncio.gather(*(paced(i, row) for i, row in enumerate(rows))))
