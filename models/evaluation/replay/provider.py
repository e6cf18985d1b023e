"""Tier 3's recorded provider: a local OpenAI-compatible server that answers a recorded prompt with the
recorded response of the model asked for (``gpt-4-1106-preview`` for the reference), streamed or not, with
token counts from the gateway's own counter for that model. A prompt with no recording gets a 404 in
OpenAI's error shape, never an invented answer.

    .venv/bin/python -m models.evaluation.replay.provider --port 8300 [--recordings FILE]

The gateway reaches it as any provider: ``tier3.providers: [{name: recorded, base_url:
http://127.0.0.1:8300/v1, model: gpt-4-1106-preview, api_key_env: ..., allow_no_key: true}]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from models.evaluation.replay.answers import Answerer, response_body, stream_events
from models.evaluation.replay.recordings import NoRecording, Recordings, load_recordings


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def build_app(recordings: Recordings) -> FastAPI:
    """The provider's app over ``recordings``."""
    app = FastAPI(title="Tierwise recorded provider")
    answerer = Answerer(recordings)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "recorded"}
                                           for m in sorted(recordings.models())]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
            model, messages = str(body["model"]), list(body["messages"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "the body must be JSON with `model` and `messages`", "invalid_request_error")
        try:
            content, usage = answerer.answer(model, messages)
        except NoRecording as exc:
            return _error(404, str(exc), "not_found_error")
        if not body.get("stream"):
            return response_body(model, content, usage)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(stream_events(model, content, usage, include_usage), media_type="text/event-stream")

    return app


def main() -> None:
    """Serve the recorded provider until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--recordings", type=Path, default=None, help="JSONL of recordings (default: every "
                        "recording in the data folder)")
    args = parser.parse_args()
    recordings = Recordings.load(args.recordings) if args.recordings else load_recordings()
    uvicorn.run(build_app(recordings), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
