"""Catalog datasets of the ingestion pipeline."""

from __future__ import annotations

from typing import Any

from kedro.io import DatasetError
from kedro.io.core import VersionNotFoundError
from kedro_datasets.json import JSONDataset


class LatestVersionJSONDataset(JSONDataset):
    """Read-only view of the latest saved version of a versioned JSON dataset; ``[]`` before the first.

    Lets a node compare what it is about to save with what the previous run saved, e.g.::

        raw_pages_previous:
          type: kaggle_qa.datasets.ingestion.LatestVersionJSONDataset
          filepath: data/01_raw/raw_pages.json   # the same path as raw_pages
          versioned: true
    """

    def load(self) -> Any:
        try:
            self.resolve_load_version()
        except VersionNotFoundError:
            return []
        return super().load()

    def save(self, data: Any) -> None:
        raise DatasetError(f"{self} is read-only: save to the dataset it mirrors instead")
