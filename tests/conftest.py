"""Shared fixtures: the real embedded Gemma (converted once) and a tiny random Gemma 3.

Also two project-wide rules:
- a test that asks for ``embedded_gemma_path`` itself loads (or converts) the real model and is
  marked ``slow`` automatically, so ``make test-fast`` (``-m "not slow"``) skips exactly those;
- :func:`skip_unless_ci_has` lets a test skip for a missing system tool only outside CI
  (``CI`` set, as ``.ci/run`` does): in CI a missing resource is a failure, never a silent skip.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# kedro-mlflow opens MLflow in every Kedro session (conf/base/mlflow.yml reads MLFLOW_TRACKING_URI):
# tests and the processes they start use a throwaway store, never the project's mlflow.db
_MLFLOW_DIR = tempfile.mkdtemp(prefix="kaggle_qa_test_mlflow_")
atexit.register(shutil.rmtree, _MLFLOW_DIR, ignore_errors=True)
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_MLFLOW_DIR}/mlflow.db"
os.environ.pop("MLFLOW_RUN_ID", None)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_MODEL_FIXTURE = "embedded_gemma_path"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def skip_unless_ci_has(available: bool, reason: str) -> None:
    """Skip with ``reason`` when a system resource is missing, except in CI, where it fails."""
    if available:
        return
    if in_ci():
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


def pytest_collection_modifyitems(config, items) -> None:
    """Mark `slow` every test whose own arguments include the real model's fixture."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is not None and REAL_MODEL_FIXTURE in info.argnames:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def embedded_gemma_path() -> str:
    """The real Gemma 3 270M, converted once into the same folder `kedro run` uses."""
    from kaggle_qa.modeling import EMBEDDED_GEMMA, resolve_model_path

    return resolve_model_path(EMBEDDED_GEMMA, PROJECT_ROOT / "data" / "06_models" / "base_model")


@pytest.fixture(scope="session")
def tiny_gemma_path(embedded_gemma_path, tmp_path_factory) -> str:
    """A tiny random-weight Gemma 3 with the real tokenizer (fast tests of every code path)."""
    from kaggle_qa.modeling import make_tiny_gemma

    return str(make_tiny_gemma(embedded_gemma_path, tmp_path_factory.mktemp("tiny_gemma")))
