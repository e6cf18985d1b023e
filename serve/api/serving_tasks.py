"""``POST /v1/tasks/{task}``: tier 1's tasks answered directly, without routing."""

from __future__ import annotations

import time

from models.answer_format import CannotRender, render
from models.tier1 import Tier1Answer, Tier1Request
from serve import metrics
from serve.api.errors import ApiError
from serve.api.protocol import TaskResponse

TASK_ENDPOINTS = ("sentiment", "entities", "faq", "intent")


class ServingTasks:
    """Tier-1 tasks over the tier-1 batcher or handle; ``max_chars`` is ``http.max_message_chars``."""

    def __init__(self, tier1, tier1_model: str, max_chars: int):
        self.tier1, self.tier1_model, self.max_chars = tier1, tier1_model, max_chars

    async def task(self, task: str, text: str) -> TaskResponse:
        """Tier 1's answer to ``task`` on ``text``, rendered as a reply when it has one."""
        if task not in TASK_ENDPOINTS:
            raise ApiError(404, f"unknown task {task!r}; tasks: {', '.join(TASK_ENDPOINTS)}", code="not_found")
        if len(text) > self.max_chars:
            raise ApiError(413, f"text: {len(text)} characters exceed the limit of {self.max_chars}", param="text",
                           code="message_too_large")
        started = time.perf_counter()
        ans: Tier1Answer = await self.tier1.answer(Tier1Request(task, text))
        latency = time.perf_counter() - started
        metrics.REQUESTS.labels("task", "1", self.tier1_model, task, "200").inc()
        metrics.LATENCY.labels("task", "1", self.tier1_model).observe(latency)
        try:
            reply = render(ans.task, ans.result, None, None)
        except CannotRender:
            reply = None  # an abstention without a result
        return TaskResponse(task=task, result=ans.result, confidence=round(ans.confidence, 4), reply=reply,
                            model=self.tier1_model, abstained=ans.escalate, reason=ans.reason or None,
                            latency_ms=round(latency * 1000, 3))
