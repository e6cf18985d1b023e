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
