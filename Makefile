# Tierwise: `make serve` runs the gateway on the embedded defaults; `make test` runs the tests.
# Both start with `make setup`, which is idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
ENCODER := models/artifacts/encoder/encoder.int8.onnx
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup serve test test-slow bench train eval-tier1 clean

setup: $(VENV)/.installed $(ENCODER)

$(PY):
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[build,dev]'
	touch $@

$(ENCODER): $(VENV)/.installed models/encoder_export.py models/quantize.py models/multitask.py models/heads/encoder.safetensors
	$(VENV)/bin/tierwise export-encoder --force

serve: setup
	$(VENV)/bin/tierwise serve

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) loadtests/bench_latency.py

train: setup
	$(VENV)/bin/tierwise train

eval-tier1: setup
	$(VENV)/bin/tierwise eval tier1 --out models/reports/tier1

clean:
	rm -rf $(VENV) models/artifacts
