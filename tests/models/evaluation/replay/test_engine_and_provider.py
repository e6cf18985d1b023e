"""The recorded engine (tier 2, inside Ray Serve LLM's LLMServer) and the recorded provider (tier 3, over
HTTP with the official openai client) answer recorded prompts with the recorded text and real token counts,
streamed or not, and refuse anything else."""

from __future__ import annotations

import httpx
import openai
import pytest
from ray.llm._internal.serve.core.server.llm_server import LLMServer
from ray.serve.llm import LLMConfig
from ray.serve.llm.openai_api_models import ChatCompletionRequest

from models.evaluation.replay.answers import chunks
from models.evaluation.replay.engine import RecordedEngine
from models.evaluation.replay.provider import build_app
from models.evaluation.replay.recordings import Recording, Recordings
from serve.tenancy.tokens import Tokenizers

QUESTION = "Janet has 3 apples and buys 2 more. How many apples does she have?"
ANSWERS = {"mixtral-8x7b-instruct": "Janet has 3 + 2 = 5 apples. The answer is 5.",
           "gpt-4-1106-preview": "She has 5 apples.\n\nThe answer is 5."}


@pytest.fixture
def recordings_file(tmp_path):
    path = tmp_path / "recordings.jsonl"
    Recordings([Recording(QUESTION, "demo", dict(ANSWERS), {m: 1.0 for m in ANSWERS})]).save(path)
    return path


def test_chunks_join_back_to_the_text():
    text = "One two  three four\nfive six seven, eight."
    pieces = chunks(text, words=3)
    assert "".join(pieces) == text and len(pieces) == 3
    assert chunks("") == [] and chunks("word") == ["word"]


async def server(recordings_file) -> LLMServer:
    config = LLMConfig(model_loading_config={"model_id": "mixtral-8x7b-instruct"},
                       accelerator_config={"kind": "cpu"},
                       engine_kwargs={"max_model_len": 4096},
                       experimental_configs={"recordings": str(recordings_file)})
    llm = LLMServer.sync_init(config, engine_cls=RecordedEngine)
    await llm.start()
    return llm


def request(text: str, stream: bool) -> ChatCompletionRequest:
    body = {"model": "mixtral-8x7b-instruct", "messages": [{"role": "user", "content": text}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return ChatCompletionRequest(**body)


async def test_the_llm_server_answers_with_the_recorded_text_and_counts(recordings_file):
    llm = await server(recordings_file)
    (response,) = [r async for r in await llm.chat(request(QUESTION, stream=False))]
    counter = Tokenizers().for_model("mixtral-8x7b-instruct")
    assert response.choices[0].message.content == ANSWERS["mixtral-8x7b-instruct"]
    assert response.usage.completion_tokens == counter.count(ANSWERS["mixtral-8x7b-instruct"])
    assert response.usage.prompt_tokens == counter.count_messages([{"role": "user", "content": QUESTION}])


async def test_the_llm_server_streams_the_recorded_text(recordings_file):
    import json

    llm = await server(recordings_file)
    batches = [b async for b in await llm.chat(request(QUESTION, stream=True))]
    events = [e for batch in batches for e in (batch if isinstance(batch, list) else [batch])]
    assert events[-1] == "data: [DONE]\n\n"
    chunks_ = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks_ if c["choices"])
    assert text == ANSWERS["mixtral-8x7b-instruct"]
    assert chunks_[-1]["usage"]["completion_tokens"] > 0


async def test_an_unrecorded_prompt_is_an_engine_error(recordings_file):
    llm = await server(recordings_file)
    (response,) = [r async for r in await llm.chat(request("Write a poem about the sea.", stream=False))]
    assert response.error.code == 404 and "no recording" in response.error.message


async def test_the_provider_answers_over_http_with_the_openai_client(recordings_file):
    app = build_app(Recordings.load(recordings_file))
    transport = httpx.ASGITransport(app=app)
    async with openai.AsyncOpenAI(base_url="http://recorded/v1", api_key="none",
                                  http_client=httpx.AsyncClient(transport=transport)) as client:
        messages = [{"role": "user", "content": QUESTION}]
        whole = await client.chat.completions.create(model="gpt-4-1106-preview", messages=messages)
        assert whole.choices[0].message.content == ANSWERS["gpt-4-1106-preview"]
        assert whole.usage.completion_tokens == Tokenizers().for_model("gpt-4-1106-preview").count(
            ANSWERS["gpt-4-1106-preview"])
        stream = await client.chat.completions.create(model="gpt-4-1106-preview", messages=messages, stream=True,
                                                      stream_options={"include_usage": True})
        parts = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in parts if c.choices) == ANSWERS["gpt-4-1106-preview"]
        assert parts[-1].usage.total_tokens == whole.usage.total_tokens
        with pytest.raises(openai.NotFoundError, match="no recorded answer of claude-2"):
            await client.chat.completions.create(model="claude-2", messages=messages)
        with pytest.raises(openai.NotFoundError, match="no recording for this prompt"):
            await client.chat.completions.create(model="gpt-4-1106-preview",
                                                 messages=[{"role": "user", "content": "Hello?"}])
