# kaggle-qa: `make run` (install + main job), `make test` (install + whole test suite).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test test-fast viz ask benchmark-train benchmark-eval

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# torch first and pinned: a bare `torch` requirement pulls a multi-GB CUDA build.
$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -r requirements.txt -c constraints.txt
	$(BIN)/pip install --no-deps -e .
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/kedro run

test: install
	HF_HUB_OFFLINE=1 HF_EVALUATE_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
	  $(BIN)/python -m pytest tests $(PYTEST_ARGS)

# Everything except the tests marked slow (real Gemma 3 270M loaded, or a browser run).
test-fast: install
	HF_HUB_OFFLINE=1 HF_EVALUATE_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
	  $(BIN)/python -m pytest tests -m "not slow" $(PYTEST_ARGS)

viz: install
	$(BIN)/kedro viz run --host 127.0.0.1 --port 4141 --no-browser

ask: install  # make ask Q="How do I submit to a competition?"  (also: kaggle-qa chat | serve)
	$(BIN)/kaggle-qa ask "$(Q)"

benchmark-train: install
	$(BIN)/python benchmarks/bench_train.py

benchmark-eval: install
	$(BIN)/python benchmarks/bench_eval.py
