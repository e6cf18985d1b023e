"""Typed settings: defaults, environment overrides, and errors that name the file and the field."""

from __future__ import annotations

import pytest

from serve.settings import ConfigError, load_settings


def test_embedded_defaults_load(settings):
    assert settings.http.port == 8000
    assert settings.tier1.faq_path.is_file()
    assert settings.encoder.model_dir.is_absolute()
    assert [r.name for r in settings.tier1.rules] == ["greeting", "thanks"]
    assert settings.tier1.when_unsure == "answer"
    assert settings.tier1.languages == ["en"]
    assert {"are_you_a_bot", "what_can_i_ask_you", "goodbye"} <= set(settings.tier1.intent_responses)


def test_tier1_defaults_without_a_file_section(tmp_path):
    s = load_settings(_write(tmp_path, "http:\n  port: 8001\n"))
    assert (s.tier1.when_unsure, s.tier1.languages, s.tier1.intent_responses) == ("answer", ["en"], {})


def test_intent_responses_may_use_the_intent_name(tmp_path):
    s = load_settings(_write(tmp_path, "tier1:\n  when_unsure: refuse\n  languages: [en, de]\n"
                                       "  intent_responses: {goodbye: 'Bye ({intent}) {{ok}}'}\n"))
    assert s.tier1.when_unsure == "refuse" and s.tier1.languages == ["en", "de"]
    assert s.tier1.intent_responses["goodbye"].format(intent="goodbye") == "Bye (goodbye) {ok}"


def test_environment_overrides_the_file(monkeypatch):
    monkeypatch.setenv("TIERWISE_STORE__URL", "redis://cache:6379/3")
    monkeypatch.setenv("TIERWISE_TIER3__PROVIDERS",
                       '[{"name": "openai", "base_url": "https://api.openai.com/v1", "model": "gpt-4o"}]')
    s = load_settings()
    assert s.store.url == "redis://cache:6379/3"
    assert s.tier3.providers[0].model == "gpt-4o"


def _write(tmp_path, text: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,field", [
    ("http:\n  port: 99999\n", "http.port"),
    ("router:\n  context_weight: high\n", "router.context_weight"),
    ("tier1:\n  rules: [{name: x, pattern: '(', answer: y}]\n", "tier1.rules.0.pattern"),
    ("store:\n  backend: mongodb\n", "store.backend"),
    ("stroe:\n  url: x\n", "stroe"),
    ("tier1:\n  faq_path: missing.yaml\n", "tier1.faq_path"),
    ("tier1:\n  when_unsure: shrug\n", "tier1.when_unsure"),
    ("tier1:\n  languages: [en, xx]\n", "tier1.languages"),
    ("tier1:\n  languages: []\n", "tier1.languages"),
    ("tier1:\n  intent_responses: {goodbye: 'Bye {name}'}\n", "tier1.intent_responses.goodbye"),
    ("tier1:\n  intent_responses: {goodbye: 'Bye {intent!r}'}\n", "tier1.intent_responses.goodbye"),
    ("tier1:\n  intent_responses: {goodbye: 'Bye {'}\n", "tier1.intent_responses.goodbye"),
    ("tier1:\n  intent_responses: {goodbye: '  '}\n", "tier1.intent_responses.goodbye"),
    ("tier1:\n  intent_responses: {say_hello_to_mars: hi}\n", "tier1.intent_responses.say_hello_to_mars"),
])
def test_bad_config_names_file_and_field(tmp_path, text, field):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(path) in str(err.value)
    assert field in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_write(tmp_path, "http: [unclosed\n"))


def test_the_shipped_tier2_configs_validate(monkeypatch):
    from serve.settings import REPO_ROOT

    for name, models in (("tier2-cpu.yaml", ["tiny-llama"]),
                         ("tier2-gpu.yaml", ["qwen2.5-7b-instruct", "llama-3.1-8b-instruct", "qwen2.5-14b-instruct"])):
        monkeypatch.setenv("TIERWISE_TIER2__MODELS_FILE", str(REPO_ROOT / "configs" / name))
        s = load_settings()
        assert [m.name for m in s.tier2.models] == models
        for m in s.tier2.models:
            scaling = m.llm_config["deployment_config"]["autoscaling_config"]
            assert {"min_replicas", "max_replicas", "target_ongoing_requests"} <= set(scaling)
    gpu = load_settings().tier2.models  # an absolute local path stays as written
    assert gpu[1].llm_config["model_loading_config"]["model_source"] == "/models/Llama-3.1-8B-Instruct"


def test_tier2_model_paths_are_relative_to_the_models_file(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "models.yaml").write_text(
        "models:\n  - llm_config:\n      model_loading_config: {model_id: tiny, model_source: ../weights/tiny}\n"
        "      accelerator_config: {kind: cpu}\n"
        "      engine_kwargs: {max_model_len: 512, enable_prefix_caching: true}\n"
        "      deployment_config:\n        max_ongoing_requests: 4\n        max_queued_requests: 8\n"
        "        autoscaling_config: {min_replicas: 1, max_replicas: 1, target_ongoing_requests: 2}\n"
        "    adapters_path: ./adapters\n    adapters: [{name: sql}]\n")
    s = load_settings(_write(tmp_path, "tier2:\n  models_file: m/models.yaml\n"))
    (m,) = s.tier2.models
    assert m.llm_config["model_loading_config"]["model_source"] == str(tmp_path / "weights" / "tiny")
    assert m.adapters_path == str(tmp_path / "m" / "adapters") and m.context_window == 512 and not m.on_gpu


def test_a_bad_tier2_model_names_both_files_and_the_field(tmp_path):
    (tmp_path / "models.yaml").write_text(
        "models:\n  - llm_config:\n      model_loading_config: {model_id: tiny, model_source: /w}\n"
        "      accelerator_config: {kind: cpu}\n      engine_kwargs: {enable_prefix_caching: true}\n"
        "      deployment_config: {max_ongoing_requests: 4}\n")
    config = _write(tmp_path, "tier2:\n  models_file: models.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    message = str(err.value)
    assert str(config) in message and str(tmp_path / "models.yaml") in message
    assert "models.0" in message and "llm_config.engine_kwargs.max_model_len must be set" in message


def test_a_missing_tier2_models_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"tier2.*models_file: file .*nowhere.yaml does not exist"):
        load_settings(_write(tmp_path, "tier2:\n  models_file: nowhere.yaml\n"))


def test_gateway_and_tier3_capacity_default_above_serves_five_and_can_autoscale(tmp_path):
    settings = load_settings()
    assert settings.http.capacity.options() == {"max_ongoing_requests": 256, "num_replicas": 1,
                                                "graceful_shutdown_timeout_s": 20.0}
    assert settings.tier3.capacity.options()["max_ongoing_requests"] >= 64
    path = tmp_path / "t.yaml"
    path.write_text("tier3:\n  capacity:\n    max_ongoing_requests: 500\n"
                    "    autoscaling: {min_replicas: 1, max_replicas: 4, target_ongoing_requests: 100}\n")
    options = load_settings(path).tier3.capacity.options()
    assert options == {"max_ongoing_requests": 500, "graceful_shutdown_timeout_s": 20.0, "autoscaling_config": {
        "min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 100.0}}
    path.write_text("http:\n  capacity:\n    autoscaling: {min_replicas: 3, max_replicas: 2, target_ongoing_requests: 8}\n")
    with pytest.raises(ConfigError, match=r"http.capacity.autoscaling: .*min_replicas \(3\) exceeds max_replicas \(2\)"):
        load_settings(path)
    path.write_text("http:\n  capacity:\n    graceful_shutdown_timeout_s: 40\n")
    with pytest.raises(ConfigError, match=r"http.capacity.graceful_shutdown_timeout_s: .*less than or equal to 25"):
        load_settings(path)


def test_the_store_must_hold_a_whole_request(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("store:\n  max_messages: 100\n")
    with pytest.raises(ConfigError, match=r"store.max_messages \(100\) must exceed http.max_messages \(256\)"):
        load_settings(path)
