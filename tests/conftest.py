"""Shared fixtures: the real embedded Gemma (converted once) and a tiny random Gemma 3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"


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
