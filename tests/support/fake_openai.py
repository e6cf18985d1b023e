"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests.

It runs uvicorn in a background thread, answers `/v1/chat/completions` (plain and SSE streaming) and
`/v1/models` deterministically, and lets the test inject failures and delays and read back every request
body it received.

    with FakeOpenAIServer() as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="none")
        srv.fail_next(503, times=2)
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import uuid

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_exceeded",
}


def _text(content) -> str:
    # Content may be a string or a list of typed parts; only text parts carry words.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _words(text: str) -> int:
    return len(text.split())


class FakeOpenAIServer:
    """OpenAI-compatible server with test controls; safe to drive from the test thread while it serves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[dict] = []
        self._failures: list[tuple[int, float | None]] = []
        self._delays: list[float] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port: int | None = None
        self.app = self._build_app()

    @property
    def base_url(self) -> str:
        """Base URL for an OpenAI client, e.g. "http://127.0.0.1:PORT/v1"."""
        if self.port is None:
            raise RuntimeError("FakeOpenAIServer is not started")
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[dict]:
        """JSON bodies of every chat completion request received, failed ones included, oldest first."""
        with self._lock:
            return list(self._requests)

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `times` chat requests with `status` and an OpenAI error body."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * times)

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Sleep `seconds` before answering each of the next `times` chat requests."""
        with self._lock:
            self._delays.extend([seconds] * times)

    def reset(self) -> None:
        """Forget received requests and pending failures and delays."""
        with self._lock:
            self._requests.clear()
            self._failures.clear()
            self._delays.clear()

    def start(self) -> FakeOpenAIServer:
        """Bind a free port and serve in a background thread; returns once the server accepts connections."""
        # Binding here rather than inside uvicorn means the port is known before the thread starts and
        # cannot be taken by another process in between.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="fake-openai", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("FakeOpenAIServer failed to start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Shut the server down and release the port."""
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._socket.close()
            self._server = self._thread = self._socket = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _next_fault(self, body: dict) -> tuple[tuple[int, float | None] | None, float]:
        with self._lock:
            self._requests.append(body)
            failure = self._failures.pop(0) if self._failures else None
            delay = self._delays.pop(0) if self._delays else 0.0
        return failure, delay

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict:
            return {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "tests"}]}

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request):
            body = await request.json()
            failure, delay = self._next_fault(body)
            if delay:
                await asyncio.sleep(delay)
            if failure is not None:
                status, retry_after = failure
                headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
                error = {"message": f"fake error {status}", "type": _ERROR_TYPES.get(status, "server_error"), "param": None, "code": None}
                return JSONResponse({"error": error}, status_code=status, headers=headers)

            messages = body.get("messages", [])
            last_user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
            reply = f"fake reply to: {last_user} [saw {len(messages)} messages]"
            usage = {
                "prompt_tokens": sum(_words(_text(m.get("content"))) for m in messages),
                "completion_tokens": _words(reply),
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "created": int(time.time()), "model": body.get("model", "")}

            tools = body.get("tools") or []
            call = None
            if tools and messages and messages[-1].get("role") != "tool":
                # An agent's first step: call the first tool offered, with the user's words as its argument.
                call = {"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
                        "function": {"name": tools[0]["function"]["name"], "arguments": json.dumps({"query": last_user})}}
            if call and not body.get("stream"):
                choice = {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                          "finish_reason": "tool_calls", "logprobs": None}
                return {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            if messages and messages[-1].get("role") == "tool":
                reply = f"fake reply to tool result {messages[-1].get('tool_call_id')}: {_text(messages[-1].get('content'))}"
            if not body.get("stream"):
                choice = {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop", "logprobs": None}
                return {**base, "object": "chat.completion", "choices": [choice], "usage": usage}

            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

            def chunk(delta: dict, finish_reason: str | None = None) -> str:
                choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
                return f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"

            async def events():
                yield chunk({"role": "assistant", "content": ""})
                if call:
                    # As OpenAI streams a call: id and name first, then the arguments in pieces.
                    arguments = call["function"]["arguments"]
                    head = {"index": 0, "id": call["id"], "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""}}
                    yield chunk({"tool_calls": [head]})
                    for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2:]):
                        yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                    yield chunk({}, "tool_calls")
                    yield "data: [DONE]\n\n"
                    return
                # Each word keeps its trailing whitespace so the deltas join back to the exact reply.
                for piece in re.findall(r"\S+\s*", reply):
                    yield chunk({"content": piece})
                yield chunk({}, "stop")
                if include_usage:
                    yield f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        return app
