"""Tier 2's plain logic: LLMConfig checks and building, placement, engine output parsing, confidence,
holding a stream back, and local LoRA adapters. The deployments themselves run in
tests/integration/test_tier2.py."""

from __future__ import annotations

import asyncio
import copy
import json
import math

import pytest

from deployments.config import LogprobCalibration, Tier2ModelSettings, Tier2Settings, to_llm_config
from deployments.tier2 import LocalLoraLoader, placement_problem, plan_placement
from serve.tiers.tier2_client import EventPump, StreamParser, Tier2Failure, answer_confidence, hold_back

GPU_MODEL = {
    "llm_config": {
        "model_loading_config": {"model_id": "qwen2.5-7b-instruct",
                                 "model_source": {"bucket_uri": "s3://bucket/Qwen2.5-7B-Instruct"}},
        "accelerator_type": "L4",
        "engine_kwargs": {"max_model_len": 32768, "gpu_memory_utilization": 0.9, "enable_prefix_caching": True},
        "deployment_config": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 4,
                                                     "target_ongoing_requests": 16},
                              "max_ongoing_requests": 64, "max_queued_requests": 128},
    },
    "tasks": ["generation"],
}


def model(**changes) -> Tier2ModelSettings:
    data = copy.deepcopy(GPU_MODEL)
    data.update(changes)
    return Tier2ModelSettings.model_validate(data)


def test_a_complete_config_builds_an_llm_config():
    m = model()
    config = to_llm_config(m)
    assert config.model_id == "qwen2.5-7b-instruct" and m.context_window == 32768 and m.on_gpu
    assert config.lora_config is None


@pytest.mark.parametrize("path", [("engine_kwargs", "max_model_len"), ("engine_kwargs", "enable_prefix_caching"),
                                  ("engine_kwargs", "gpu_memory_utilization"),
                                  ("deployment_config", "max_queued_requests"),
                                  ("deployment_config", "autoscaling_config", "target_ongoing_requests")])
def test_a_missing_production_setting_is_named(path):
    data = copy.deepcopy(GPU_MODEL)
    holder = data["llm_config"]
    for key in path[:-1]:
        holder = holder[key]
    del holder[path[-1]]
    with pytest.raises(ValueError, match=r"llm_config\." + r"\.".join(path) + " must be set"):
        Tier2ModelSettings.model_validate(data)


def test_an_invalid_llm_config_field_is_named():
    data = copy.deepcopy(GPU_MODEL)
    data["llm_config"]["no_such_field"] = 1
    with pytest.raises(ValueError, match=r"llm_config\.no_such_field"):
        Tier2ModelSettings.model_validate(data)


def test_adapters_switch_on_lora_multiplexing():
    remote = to_llm_config(model(adapters_path="s3://bucket/adapters", adapters=[{"name": "sql", "tasks": ["code"]}]))
    assert remote.lora_config.dynamic_lora_loading_path == "s3://bucket/adapters"
    assert remote.engine_kwargs["enable_lora"] and remote.engine_kwargs["max_loras"] == 1
    local = to_llm_config(model(adapters_path="/models/adapters", adapters=[{"name": "sql"}, {"name": "faq"}]))
    assert local.lora_config.dynamic_lora_loading_path is None  # resolved by LocalLoraLoader instead
    assert local.lora_config.max_num_adapters_per_replica == 2
    with pytest.raises(ValueError, match="adapters need adapters_path"):
        model(adapters=[{"name": "sql"}])


def test_placement_needs_the_gpus_the_config_asks_for():
    m = model()
    assert "needs 1 GPU of type L4 per replica" in placement_problem(m, {"CPU": 2.0})
    assert placement_problem(m, {"CPU": 8, "GPU": 1, "accelerator_type:L4": 1}) is None
    assert "type L4" in placement_problem(m, {"GPU": 4, "accelerator_type:A10G": 4})
    tp = copy.deepcopy(GPU_MODEL)
    tp["llm_config"]["engine_kwargs"]["tensor_parallel_size"] = 2
    del tp["llm_config"]["accelerator_type"]
    assert "needs 2 GPUs per replica" in placement_problem(Tier2ModelSettings.model_validate(tp), {"GPU": 1})
    cpu = copy.deepcopy(GPU_MODEL)
    cpu["llm_config"]["accelerator_config"] = {"kind": "cpu"}
    del cpu["llm_config"]["accelerator_type"], cpu["llm_config"]["engine_kwargs"]["gpu_memory_utilization"]
    assert placement_problem(Tier2ModelSettings.model_validate(cpu), {"CPU": 2}) is None


@pytest.mark.parametrize("placement, placed", [("cluster", False), ("autoscaler", True)])
def test_a_model_the_cluster_lacks_gpus_for_waits_for_the_autoscaler_only_when_told(placement, placed):
    models, unplaced = plan_placement(Tier2Settings(models=[model()], placement=placement), {"CPU": 8.0})
    assert bool(models) is placed and ("qwen2.5-7b-instruct" in unplaced) is not placed


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


async def test_local_adapters_resolve_to_their_folder(tmp_path):
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "adapter_config.json").write_text("{}")
    loader = LocalLoraLoader(str(tmp_path), download_timeout_s=30, max_tries=1)
    config = await loader.load_model_from_config("base:sql", None)
    assert config.local_path == str(tmp_path / "sql") and config.model_id == "base:sql"
    with pytest.raises(ValueError, match="no adapter_config.json"):
        await loader.load_model_from_config("base:missing", None)


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
