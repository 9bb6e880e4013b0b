"""Folder datasets: versioned adapter folders are never overwritten; base model resolves."""

import pytest
from kedro.io import DatasetError
from kedro.io.core import Version

from kaggle_qa.datasets import BaseModelDataset, FolderDataset
from kaggle_qa.modeling import EMBEDDED_GEMMA, model_identity


def test_versioned_folder_saves_new_versions_and_refuses_overwrite(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "adapter_config.json").write_text("{}")
    first = FolderDataset(str(tmp_path / "adapter"), version=Version(None, "2026-01-01T00.00.00.000Z"))
    first.save(str(source))
    assert (tmp_path / "adapter" / "2026-01-01T00.00.00.000Z" / "adapter" / "adapter_config.json").exists()
    with pytest.raises(DatasetError, match="must not exist"):
        FolderDataset(str(tmp_path / "adapter"), version=Version(None, "2026-01-01T00.00.00.000Z")).save(str(source))
    FolderDataset(str(tmp_path / "adapter"), version=Version(None, "2026-01-02T00.00.00.000Z")).save(str(source))
    latest = FolderDataset(str(tmp_path / "adapter"), version=Version(None, None)).load()
    assert "2026-01-02" in latest
    assert not list((tmp_path / "adapter").glob(".*"))  # no staging leftovers


def test_folder_dataset_rejects_unsaveable_objects(tmp_path):
    with pytest.raises(DatasetError, match="save_pretrained"):
        FolderDataset(str(tmp_path / "x")).save(42)


def test_base_model_dataset_resolves_embedded_and_passthrough(embedded_gemma_path, tmp_path):
    dataset = BaseModelDataset(source=EMBEDDED_GEMMA, path=embedded_gemma_path)
    assert dataset.load() == embedded_gemma_path and dataset.exists()
    assert BaseModelDataset(source="google/gemma-7b").load() == "google/gemma-7b"
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save("anything")
    identity = model_identity(embedded_gemma_path)
    assert identity["name"] == EMBEDDED_GEMMA and identity["architecture"] == "Gemma3ForCausalLM"
