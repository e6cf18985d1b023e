"""Recorded answers as real engines, through the whole gateway: the recorded engine runs inside Ray Serve LLM's
``LLMServer`` deployments (configs/replay/tier2.yaml) and the recorded provider is tier 3, so the deployments,
handles, routing, escalation and accounting are the real ones; only the models' words come from recordings.
"""

from __future__ import annotations

import uuid

import openai
import pytest
import yaml

from models.evaluation.replay.provider import build_app as build_provider
from models.evaluation.replay.recordings import Recording, Recordings
from serve.settings import REPO_ROOT, ProviderSettings
from tests.integration.conftest import REDIS_DB_URL, wait_ready
from tests.support.fake_openai import FakeOpenAIServer

APP = "replay"
MATHS = "Janet has 3 apples and buys 2 more. How many apples does she have?"
ANSWERS = {"mistral-7b-instruct": "5", "mixtral-8x7b-instruct": "Janet has 3 + 2 = 5 apples.",
           "gpt-4-1106-preview": "She has 5 apples."}
# A short workload: recorded questions whose models are right or wrong, so that grading has something to tell.
QUESTIONS = [Recording(f"Tom reads {n} pages a day for {n + 1} days. How many pages does he read in all?",
                       "routellm_gsm8k", {m: f"{m} says {n * (n + 1)} pages." for m in ANSWERS},
                       {"gpt-4-1106-preview": 1.0, "mixtral-8x7b-instruct": float(n % 2), "mistral-7b-instruct": 0.0})
             for n in range(2, 12)]


class RecordedServer(FakeOpenAIServer):
    """The recorded provider's app, served from a thread like the tests' other local providers."""

    def __init__(self, recordings: Recordings):
        self.recordings = recordings
        super().__init__()

    def _build_app(self):
        return build_provider(self.recordings)


@pytest.fixture(scope="module")
def replay(cluster, settings, tmp_path_factory):
    """Deploy the ``replay`` application (recorded tiers 2 and 3); yield its openai client."""
    from ray import serve

    from deployments.config import Tier2Settings
    from serve.app import build_app

    folder = tmp_path_factory.mktemp("replay")
    recordings = Recordings([Recording(MATHS, "demo", dict(ANSWERS), {m: 1.0 for m in ANSWERS}), *QUESTIONS])
    recordings.save(folder / "recordings.jsonl")
    models = yaml.safe_load((REPO_ROOT / "configs" / "replay" / "tier2.yaml").read_text())
    for model in models["models"]:
        model["llm_config"]["experimental_configs"] = {"recordings": str(folder / "recordings.jsonl")}
    (folder / "tier2.yaml").write_text(yaml.safe_dump(models))
    provider = RecordedServer(recordings).start()
    s = settings.model_copy(deep=True)
    s.tier2 = Tier2Settings(models_file=folder / "tier2.yaml")
    s.store.backend, s.store.url, s.store.prefix = "redis", REDIS_DB_URL, f"{cluster['prefix']}-replay"
    s.http.num_cpus = 0
    s.tier3.providers = [ProviderSettings(name="recorded", base_url=provider.base_url, model="gpt-4-1106-preview",
                                          api_key_env="TIERWISE_TEST_NO_KEY", allow_no_key=True, max_retries=0)]
    serve.run(build_app(s), name=APP, route_prefix=f"/{APP}")
    base = f"{cluster['main']}/{APP}"
    wait_ready(f"{base}/readyz", timeout=120)
    yield {"client": openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0), "base": base,
           "prefix": s.store.prefix}
    serve.delete(APP)
    provider.stop()


@pytest.fixture(scope="module")
def client(replay) -> openai.OpenAI:
    return replay["client"]


def ask(client: openai.OpenAI, model: str, text: str, **kwargs):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers={"X-Request-Id": uuid.uuid4().hex},
        **kwargs)


def test_a_tier2_model_answers_with_its_recording_through_llmserver(client):
    raw = ask(client, "mixtral-8x7b-instruct", MATHS)
    completion, info = raw.parse(), raw.parse().model_extra["tierwise"]
    assert completion.choices[0].message.content == ANSWERS["mixtral-8x7b-instruct"]
    assert (info["tier"], info["model"]) == (2, "mixtral-8x7b-instruct")
    assert completion.usage.completion_tokens > 0 and info["cost_usd"] < info["baseline_cost_usd"]


def test_a_stream_from_the_recorded_engine_carries_the_whole_recording(client):
    stream = client.chat.completions.create(model="mistral-7b-instruct", stream=True,
                                            messages=[{"role": "user", "content": MATHS}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWERS["mistral-7b-instruct"]
    assert chunks[-1].model_extra["tierwise"]["tier"] == 2


def test_routed_requests_get_the_recording_of_the_model_that_answered(client):
    raw = ask(client, "auto", MATHS)
    info = raw.parse().model_extra["tierwise"]
    assert info["tier"] in (2, 3)
    assert raw.parse().choices[0].message.content == ANSWERS[info["model"]]


def test_a_short_replay_is_graded_by_recordings_and_its_ledger_matches_the_responses(replay):
    import asyncio

    from models.evaluation.replay.report import figures, read_usage
    from models.evaluation.replay.run import send
    from models.evaluation.replay.workload import Mix, build_workload
    from serve.tenancy.auth import KeyAdmin

    rows = build_workload(Mix(slices={"gsm8k": 1}), Recordings(QUESTIONS), 30, seed=3)
    _, key = KeyAdmin(REDIS_DB_URL, replay["prefix"]).create(f"replay-{uuid.uuid4().hex[:8]}")
    outcomes = asyncio.run(send(rows, replay["base"], key, rate=20, stream_share=0.5, concurrency=8))
    assert all(o.status == 200 for o in outcomes), [o.error for o in outcomes if o.status != 200]
    assert {o.streamed for o in outcomes} == {True, False}
    for o in outcomes:
        if o.tier in (2, 3):  # the recording of the model that answered, graded by its recorded score
            assert o.content == o.row.recording.answers[o.info["model"]]
            assert o.score() == o.row.recording.scores[o.info["model"]]
    f = figures(outcomes, read_usage(replay["base"], key))
    assert f["ledger"]["matches_responses"] and f["ledger"]["requests"] == 30
    assert f["overall"]["errors"] == 0 and f["overall"]["frontier_quality"] == 1.0
    assert f["overall"]["quality_retained"] == round(sum(o.score() for o in outcomes) / 30, 4)
