"""The gateway's tier-2 client: engine output parsing, confidence, holding a stream back, failures and load.
The deployments themselves run in tests/integration/test_tier2.py."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from deployments.config import LogprobCalibration
from serve.tiers.tier2_client import EventPump, StreamParser, Tier2Failure, answer_confidence, hold_back
from tests.deployments.test_tier2 import model




def test_confidence_is_the_geometric_mean_probability_or_its_calibration():
    assert answer_confidence([math.log(0.5), math.log(0.5)], None) == pytest.approx(0.5)
    assert answer_confidence([], None) == 1.0
    calibrated = answer_confidence([-1.0, -3.0], LogprobCalibration(slope=2.0, intercept=3.0))
    assert calibrated == pytest.approx(1 / (1 + math.exp(-(2.0 * -2.0 + 3.0))))


def sse(chunk: dict) -> str:
    return f"data: {json.dumps(chunk)}\n\n"


def test_stream_batches_become_events():
    batch = [
        sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}),
        sse({"choices": [{"index": 0, "delta": {"content": "Hi"},
                          "logprobs": {"content": [{"token": "Hi", "logprob": -0.5}]}, "finish_reason": None}]}),
        sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 1}}),
        "data: [DONE]\n\n",
    ]
    expected = [{"delta": "Hi", "logprobs": [-0.5]}, {"usage": {"prompt_tokens": 5, "completion_tokens": 1}},
                {"finish_reason": "length"}]
    assert StreamParser().feed(batch) == expected
    # Under load a batch can end inside an event: cut the same text everywhere, the events are the same.
    text = "".join(batch)
    for cut in range(1, len(text), 7):
        parser = StreamParser()
        assert parser.feed([text[:cut]]) + parser.feed([text[cut:]]) == expected


def test_line_separators_inside_the_text_do_not_cut_an_event():
    # JSON leaves U+2028, U+0085 and U+001C raw in strings; a random model emits them (seen in CI).
    text = "a\u2028b\x85c\x1cd"
    batch = [f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': text}}]}, ensure_ascii=False)}\n\n"]
    assert StreamParser().feed(batch) == [{"delta": text, "logprobs": []}]


def test_an_engine_error_in_the_stream_raises():
    with pytest.raises(Tier2Failure) as err:
        StreamParser().feed([sse({"error": {"message": "max_tokens too large", "code": 400}})])
    assert err.value.cause == "rejected" and err.value.status == 400

    class ErrorResponse:
        class error:
            code, message = 500, "engine died"

    with pytest.raises(Tier2Failure) as err:
        StreamParser().feed(ErrorResponse())
    assert err.value.cause == "failure"


async def events(*items, delay=0.0, fail=None):
    for item in items:
        await asyncio.sleep(delay)
        yield item
    if fail:
        raise fail


async def test_hold_back_reads_the_first_tokens_and_keeps_the_rest():
    pump = EventPump(events(*({"delta": str(i), "logprobs": [-0.1]} for i in range(5)), {"finish_reason": "stop"}))
    held, ended = await hold_back(pump, 3, 1000)
    assert [e["delta"] for e in held] == ["0", "1", "2"] and not ended
    rest = [e async for e in pump]
    assert rest == [{"delta": "3", "logprobs": [-0.1]}, {"delta": "4", "logprobs": [-0.1]}, {"finish_reason": "stop"}]


async def test_hold_back_stops_at_the_end_or_the_time_budget():
    held, ended = await hold_back(EventPump(events({"delta": "a", "logprobs": []})), 8, 1000)
    assert ended and len(held) == 1
    slow = EventPump(events(*({"delta": str(i), "logprobs": []} for i in range(4)), delay=0.2))
    held, ended = await hold_back(slow, 4, 250)
    assert not ended and 1 <= len(held) < 4
    assert [e["delta"] for e in held + [e async for e in slow]] == ["0", "1", "2", "3"]  # nothing lost


async def test_a_failure_reaches_the_reader():
    pump = EventPump(events({"delta": "a", "logprobs": []}, fail=Tier2Failure("failure", "replica died")))
    held, _ = await hold_back(pump, 1, 100)
    with pytest.raises(Tier2Failure, match="replica died"):
        await pump.get()


def test_a_full_queue_is_an_overload_and_anything_else_a_failure():
    from ray.serve.exceptions import BackPressureError

    from serve.tiers.tier2_client import Tier2Target, _call_failure

    target = Tier2Target(model())
    overload = _call_failure(target, BackPressureError(num_queued_requests=128, max_queued_requests=128))
    assert overload.cause == "overload" and "max_queued_requests=128" in str(overload)
    died = _call_failure(target, RuntimeError("actor died"))
    assert died.cause == "failure" and "qwen2.5-7b-instruct failed: RuntimeError: actor died" in str(died)


def test_load_is_in_flight_requests_over_capacity():
    from serve.tiers.tier2_client import Tier2Pool, Tier2Target

    class Handle:
        def options(self, **_):
            return self

    settings = type("S", (), {"models": [model()]})()
    pool = Tier2Pool(settings, {"qwen2.5-7b-instruct": Handle()}, {})
    target = Tier2Target(settings.models[0])
    assert pool.targets == [target] and pool.load(target) == 0.0
    pool._in_flight["qwen2.5-7b-instruct"] = 64
    assert pool.load(target) == 64 / (64 * 4)
