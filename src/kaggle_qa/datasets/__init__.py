"""Custom Kedro datasets: model folders, adapter folders, validated QA JSON."""

from .folders import BaseModelDataset, FolderDataset
from .ingestion import LatestVersionJSONDataset
from .qa_json import QAJSONDataset

__all__ = ["BaseModelDataset", "FolderDataset", "LatestVersionJSONDataset", "QAJSONDataset"]
