"""Wiring the gateway's services: which token counter each priced model gets."""

from __future__ import annotations

from serve.services import tokenizers_for
from deployments.config import Tier2ModelSettings
from serve.settings import REPO_ROOT


def _tier2(name: str, source) -> Tier2ModelSettings:
    return Tier2ModelSettings(llm_config={
        "model_loading_config": {"model_id": name, "model_source": source}, "accelerator_config": {"kind": "cpu"},
        "engine_kwargs": {"max_model_len": 512, "enable_prefix_caching": True},
        "deployment_config": {"max_ongoing_requests": 4, "max_queued_requests": 8,
                              "autoscaling_config": {"min_replicas": 1, "max_replicas": 1,
                                                     "target_ongoing_requests": 2}}})


def test_local_tier2_models_count_with_their_own_tokenizer_and_remote_ones_with_their_family(settings):
    s = settings.model_copy(deep=True)
    tiny = REPO_ROOT / "models" / "artifacts" / "tiny-llm" / "model"
    s.tier2.models = [_tier2("tiny-llama", str(tiny)),
                      _tier2("qwen2.5-7b-instruct", {"bucket_uri": "s3://bucket/Qwen2.5-7B-Instruct"}),
                      _tier2("llama-3.1-8b-instruct", "/nonexistent/llama")]
    tokenizers = tokenizers_for(s)
    assert tokenizers.for_model("tiny-llama").family == f"local:{tiny / 'tokenizer.json'}"
    assert tokenizers.for_model("qwen2.5-7b-instruct").family == "qwen"
    assert tokenizers.for_model("llama-3.1-8b-instruct").family == "llama3"
    assert tokenizers.for_model(s.tier1.model_name).exact
