"""Tier 2's deployments, built but not started: LLMConfig checks and building, placement, and local LoRA
adapters. The deployments themselves run in tests/integration/test_tier2.py."""

from __future__ import annotations

import copy

import pytest

from deployments.config import Tier2ModelSettings, Tier2Settings, to_llm_config
from deployments.tier2 import LocalLoraLoader, placement_problem, plan_placement

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


async def test_local_adapters_resolve_to_their_folder(tmp_path):
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "adapter_config.json").write_text("{}")
    loader = LocalLoraLoader(str(tmp_path), download_timeout_s=30, max_tries=1)
    config = await loader.load_model_from_config("base:sql", None)
    assert config.local_path == str(tmp_path / "sql") and config.model_id == "base:sql"
    with pytest.raises(ValueError, match="no adapter_config.json"):
        await loader.load_model_from_config("base:missing", None)




def test_an_engine_class_is_checked_at_start_and_named_when_missing():
    assert model(engine_cls="models.evaluation.replay.engine:RecordedEngine").engine_cls.endswith("RecordedEngine")
    for path in ("no_such_package.engine:Engine", "models.no_such_module:Engine"):
        with pytest.raises(ValueError, match=f"engine_cls: no module '{path.partition(':')[0]}'"):
            model(engine_cls=path)
    with pytest.raises(ValueError, match="engine_cls"):
        model(engine_cls="not an import path")
