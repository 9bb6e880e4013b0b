"""The paper's vendored datasets: catalog entries, row validation, read-only, `--env published`."""

from __future__ import annotations

import json

import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, DatasetError

from kaggle_qa.datasets.synthesis import APIKeyDataset, PublishedQADataset
from kaggle_qa.settings import CONFIG_LOADER_ARGS


def project_catalog(project_root, env):
    """The catalog `kedro run --env <env>` builds (the project's own config loader settings)."""
    loader = OmegaConfigLoader(str(project_root / "conf"), **(CONFIG_LOADER_ARGS | {"default_run_env": env}))
    return DataCatalog.from_config(loader["catalog"], loader["credentials"])


@pytest.fixture
def in_project(project_root, monkeypatch):
    monkeypatch.chdir(project_root)  # catalog paths are relative to the project root
    return project_root


def test_published_datasets_load_from_the_catalog(in_project):
    catalog = project_catalog(in_project, "local")
    assert len(catalog.load("qa_v1_published")) == 564
    assert len(catalog.load("qa_v3_published")) == 1663


def test_env_published_trains_on_the_published_v3(in_project):
    catalog = project_catalog(in_project, "published")
    rows = catalog.load("qa_v3")
    assert len(rows) == 1663 and set(rows[0]) == {"input", "instruction", "output"}


def test_a_corrupted_copy_fails_with_the_file_and_row_index(project_root, tmp_path):
    rows = json.loads((project_root / "data/03_primary/published/kaggle_docs_QA_v3.json").read_text())
    del rows[7]["output"]
    broken = tmp_path / "broken_v3.json"
    broken.write_text(json.dumps(rows))
    with pytest.raises(DatasetError, match=r"broken_v3\.json: row 7 is missing key .output."):
        PublishedQADataset(str(broken)).load()
    rows[7]["output"] = 42
    broken.write_text(json.dumps(rows))
    with pytest.raises(DatasetError, match="row 7 key .output. holds int"):
        PublishedQADataset(str(broken)).load()


def test_published_data_cannot_be_overwritten(project_root):
    dataset = PublishedQADataset(str(project_root / "data/03_primary/published/kaggle_docs_QA_v1.json"))
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save([])


def test_api_key_comes_from_credentials_or_environment_and_never_shows(in_project, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-123")
    catalog = project_catalog(in_project, "local")
    key = catalog.load("teacher_api_key")
    assert key == "sk-from-env-123" or (in_project / "conf/local/credentials.yml").exists()
    assert "sk-" not in repr(key) and "sk-" not in str(catalog["teacher_api_key"])
    assert APIKeyDataset(credentials={"api_key": None}).load() is None
